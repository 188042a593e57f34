"""The one training loop for every arm: steps, optimizer and schedule, run folder and checkpoints, memory estimates."""
