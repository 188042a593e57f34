"""How the suite's worker processes start (DataLoader workers, media validation)."""
from __future__ import annotations

import multiprocessing

# What the fork server imports once, so that each worker it forks starts with them loaded.
WORKER_PRELOAD = ["torch", "numpy", "shared.data.loader", "shared.data.sources", "shared.features.store",
                  "shared.data.synthetic_reader", "shared.data.media", "shared.data.media_check"]


def worker_context():
    """Worker processes are forked from a single-threaded fork server, not from this process.

    A process with threads (OpenMP pools, tqdm's monitor, FFmpeg's decoders, a test runner's I/O
    thread) can be forked while one of them holds a lock; the forked worker then waits on it
    forever. That hung CI: DataLoader workers of a pytest-xdist process stuck in futex_wait.
    Python 3.14 made ``forkserver`` its default on Linux for this reason."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)  # read when the server starts; later calls are no-ops
    return ctx
