"""Progress bars that stay readable in log files.

On a terminal a bar refreshes every 2 s; when stderr is redirected (CI, ``nohup``, ``| tee``) every
refresh becomes one more ``\\r`` line in the log, so there it refreshes once a minute.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, **kwargs) -> tqdm:
    kwargs.setdefault("mininterval", 2 if sys.stderr.isatty() else 60)
    return tqdm(iterable, **kwargs)
