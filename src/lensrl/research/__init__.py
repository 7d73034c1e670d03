"""Research tooling on top of runs: studies (their definition, running and reports), GRPO-vs-LENS
comparisons, statistics, plots, the sample log."""
