"""Moved to shared/text_side/losses.py: the text side every embedding arm shares (shared/embedding_arm.py).
This name stays importable, as the same module object (so monkeypatching either name patches both)."""
import sys

from shared.text_side import losses as _moved

sys.modules[__name__] = _moved
