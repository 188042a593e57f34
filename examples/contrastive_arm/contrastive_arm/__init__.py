"""An arm from outside the suite: contrastive alignment of pooled visual tokens, no language model.

Importing this package registers the arm ``contrastive`` (see ``arm.py``).
"""
from contrastive_arm.arm import ContrastiveArm, ContrastiveConfig

__all__ = ["ContrastiveArm", "ContrastiveConfig"]
