"""Built-in split protocols."""
