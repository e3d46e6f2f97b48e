"""Checkpoints: saving a run's state as it trains, and reading a finished run."""
