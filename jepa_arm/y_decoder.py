"""Moved to shared/text_side/y_decoder.py: the text side every embedding arm shares (shared/embedding_arm.py).
This name stays importable, as the same module object (so monkeypatching either name patches both)."""
import sys

from shared.text_side import y_decoder as _moved

sys.modules[__name__] = _moved
