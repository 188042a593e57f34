"""Frozen-encoder outputs: the Perception Encoder, the memory-mapped feature store, cache vs online tokens, stream windows."""
