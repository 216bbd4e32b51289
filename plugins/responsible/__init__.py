"""Responsible use: a run's evidence of who its model fails and why (detector sensitivity,
fairness with uncertainty, explanation maps, the model card). Each module is its own plugin."""
