"""Reproducible speed and memory measurements: `python -m benchmarks` (see benchmarks/README.md)."""
