"""Speed benchmarks: ``python -m benchmarks.norms`` (see benchmarks/README.md)."""
