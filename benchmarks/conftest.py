"""Benchmarks run only on request: `cgbench bench` (compare with the last saved run, save; see README)."""
