"""Stage 1, problems: where they come from, how they become prompts, and how an answer is read back."""
