"""Benchmarks, and the autoscaling simulator (``python -m bench.simulator``)."""
