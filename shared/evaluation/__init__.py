"""Evaluation of checkpoints: metrics (declared once), the arm-agnostic evaluator, latency, segmentation, the control audit."""
