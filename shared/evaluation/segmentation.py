"""Segmentation for selective decoding (the paper's section 4.5), for any arm that embeds: decode a
stream of predicted embeddings only where its meaning changes, instead of at a fixed interval.

Both strategies split the W window embeddings of a stream into N contiguous segments and decode one
embedding per segment, taken at the segment's middle window ("exact") or averaged over the segment
("mean"). Uniform sampling cuts equal segments; the adaptive strategy is Ward agglomerative
clustering with a temporal connectivity constraint (each window is linked to its neighbours only),
so segments are contiguous and have low within-segment variance. Each annotation is then matched to
the decoded output nearest in time.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.cluster import AgglomerativeClustering

Segments = list[tuple[int, int]]  # [start, end) window indices


def uniform_segments(n_windows: int, n_segments: int) -> Segments:
    n_segments = max(1, min(n_segments, n_windows))
    edges = np.linspace(0, n_windows, n_segments + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def adaptive_segments(embeddings: np.ndarray, n_segments: int) -> Segments:
    n = len(embeddings)
    n_segments = max(1, min(n_segments, n))
    if n_segments in (1, n):
        return uniform_segments(n, n_segments)
    chain = sparse.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], format="csr")
    labels = AgglomerativeClustering(n_clusters=n_segments, linkage="ward",
                                     connectivity=chain).fit_predict(np.asarray(embeddings, dtype=np.float64))
    edges = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), n]
    return list(zip(edges[:-1], edges[1:]))


def segments_for(strategy: str, embeddings: np.ndarray, n_segments: int) -> Segments:
    if strategy == "uniform":
        return uniform_segments(len(embeddings), n_segments)
    if strategy == "adaptive":
        return adaptive_segments(embeddings, n_segments)
    raise ValueError(f"unknown strategy {strategy!r} (uniform, adaptive)")


def decode_points(segments: Segments, embeddings: np.ndarray, times: np.ndarray,
                  pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Time [N] and embedding [N, E] to decode for each segment."""
    mids = np.array([(a + b - 1) // 2 for a, b in segments])
    if pooling == "exact":
        chosen = embeddings[mids]
    elif pooling == "mean":
        chosen = np.stack([embeddings[a:b].mean(axis=0) for a, b in segments])
    else:
        raise ValueError(f"unknown pooling {pooling!r} (exact, mean)")
    return times[mids], chosen


def nearest_decoded(decoded_times: np.ndarray, annotation_times: np.ndarray) -> np.ndarray:
    """For each annotation, the index of the decoded output nearest in time."""
    return np.abs(np.asarray(annotation_times)[:, None] - np.asarray(decoded_times)[None, :]).argmin(axis=1)
