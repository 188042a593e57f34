"""The one training loop for every arm: steps, optimizer and schedule, the layouts (DDP, FSDP2), run folder and checkpoints."""
