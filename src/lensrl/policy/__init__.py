"""The policy: loading it, updating it with the clipped surrogate, and spreading it over processes."""
