"""Measuring the suite rather than running it: the step timer and the matmul peak (MFU's
denominator), the latency harness, training FLOPs per sample, and memory per GPU estimated on the
meta device (DDP) and over a fake process group (FSDP2). Used by ``latency``, ``describe``,
``data-bench`` and the comparison's compute axis; training itself imports nothing from here."""
