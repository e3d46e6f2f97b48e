"""Global-batch helpers for losses whose negatives come from every device's shard (CLUB, and the
contrastive cross-entropy of `fmjax.losses.contrastive`: MIL-NCE, SupCon, Cross-CPC, code matching).
With `axis_name=None` (one device, no mapped axis) the batch is the global batch: no gather, offset 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gather_batch(x: jax.Array, axis_name: str | None) -> jax.Array:
  """The global batch (every device's shard, in device order) along axis 0."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def local_offset(local_batch: int, axis_name: str | None) -> jax.Array | int:
  """Where this device's shard starts in the global batch."""
  return 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch


def global_rows(local_batch: int, axis_name: str | None) -> jax.Array:
  """The positions (local batch,) of this device's rows in the global batch: in a contrastive loss over
  `gather_batch`-ed keys, where each local query's own key sits."""
  return local_offset(local_batch, axis_name) + jnp.arange(local_batch)
