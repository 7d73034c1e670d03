"""The experiment scripts behind results/, run from the repository root as `python -m experiments.NAME`
(experiments/README.md)."""
