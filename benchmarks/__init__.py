"""Benchmarks of tempo_search. Run one with `python -m benchmarks.<name>`."""
