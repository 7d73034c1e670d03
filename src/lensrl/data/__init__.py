"""Stage 1, problems: the `Problem` record, where problems come from, and how they become prompts."""
