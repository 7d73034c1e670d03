"""Evaluation: pass@k overall and per difficulty level."""
