"""Research tooling on top of runs: studies and their registry, GRPO-vs-LENS comparisons, statistics,
plots, the sample log."""
