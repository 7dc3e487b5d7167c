"""Pieces of the serving and operator benchmarks: processes, load generation, payloads, reports."""
