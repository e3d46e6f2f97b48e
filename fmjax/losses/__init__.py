"""Losses whose negatives come from the global batch (every device's shard)."""
