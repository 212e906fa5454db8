"""Allocation search with Optuna (issue 3). Nothing here yet."""
