"""Benchmarks run only on request: pytest benchmarks --benchmark-enable (see README)."""
