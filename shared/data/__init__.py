"""Clips and captions by position: synthetic benchmark, manifests, media readers, the training order, loaders."""
