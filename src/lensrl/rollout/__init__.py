"""Stages 2-3, rollouts: sample G responses per question, score them, take behaviour log-probs, gather them."""
