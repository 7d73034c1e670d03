"""Bridges from lensrl to other training frameworks.

Each bridge lives in its own submodule and imports its framework only there, so `import lensrl` and
`import lensrl.integrations` never need it:

* `lensrl.integrations.trl`: `LensGRPOTrainer`, TRL's `GRPOTrainer` with LENS advantages (needs `pip install trl`).
* `lensrl.integrations.verl`: a `lens` advantage estimator for verl's Ray trainer, its plumbing and a
  Math-Verify reward function (needs `pip install verl`; launch with `python -m lensrl.integrations.verl`).
"""
