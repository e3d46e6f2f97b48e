"""Numerics on what a model gives: metrics, linear heads, the lag search and its hand-crafted baseline,
codebook statistics."""
