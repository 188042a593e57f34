"""The VLM arm (registered as ``vlm``): PerceptionLM-recipe token prediction with the whole base LM."""
from vlm_arm.arm import VlmArm  # noqa: F401  (registers the arm)
