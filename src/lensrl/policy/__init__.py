"""The policy: loading it, its log-prob passes (`forward`), and spreading it over processes."""
