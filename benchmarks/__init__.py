"""Benchmarks of tempo_search; run one with `python -m benchmarks.<name>`."""
