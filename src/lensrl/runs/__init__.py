"""Run management: the run folder, its logs, checkpoints, resume rules and experiment trackers."""
