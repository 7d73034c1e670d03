"""The benchmarks of lensrl, run from the repository root: `python -m bench.NAME` (bench/README.md)."""
