"""Evaluation of checkpoints: metrics (declared once), the arm-agnostic evaluator, segmentation, the control audit."""
