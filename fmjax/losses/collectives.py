"""Global-batch helpers for losses whose negatives come from every device's shard (CLUB, Cross-CPC,
code matching, MIL-NCE). With `axis_name=None` (one device, no mapped axis) they are the identity."""

from __future__ import annotations

import jax


def gather_batch(x: jax.Array, axis_name: str | None) -> jax.Array:
  """The global batch (every device's shard, in device order) along axis 0."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def local_offset(local_batch: int, axis_name: str | None) -> jax.Array | int:
  """Where this device's shard starts in the global batch."""
  return 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch
