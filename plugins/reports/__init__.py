"""Built-in report observers: figures and CSV/JSON tables written into each run's outputs."""
