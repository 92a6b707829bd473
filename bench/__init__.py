"""Benchmarks and the chaos run: scripts that print their figures (not part of the package)."""
