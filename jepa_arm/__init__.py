"""The JEPA arm (registered as ``jepa``): embedding prediction with a bidirectional Llama-layer predictor."""
from jepa_arm.arm import JepaArm  # noqa: F401  (registers the arm)
