"""Figures drawn from result files only (metrics.jsonl, latency.json), never from live models."""
