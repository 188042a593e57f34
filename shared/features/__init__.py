"""Frozen-encoder outputs: the Perception Encoder, the on-disk feature and embedding stores, stream windows."""
