"""AlignVSR's local alignment (Liu et al., arXiv 2410.16438) on the furnace: each video step's
attention over the current's units should fall on the units of its own time span, shifted by the lag.

AlignVSR's local loss is a cross-entropy on the cross-attention weights (averaged over heads and
layers): each video frame's target is the audio units of its own span (the official code: the 3 audio
frames at 50 Hz centred on the frame's 2t, each unit index counted once), so a frame is asked to put
its attention mass on the units it is synchronous with. Speech has no lag. On the furnace the current
leads the video by an unknown lag, which is what the aligner searches for, so here the span of video
step t is the current units within `radius` steps of t's own step shifted back by a lag:

* `span_mass`: the attention mass each video step puts on its span at each candidate lag.
* `local_per_lag`: -mean over the window's steps of log(mass): the paper's loss at one lag.
* `local_alignment`: the training term. The true lag is unknown in training, as for MIL-NCE, so the
  candidate lags are a bag and one of them must explain the whole window: -(1/W) log of the mean over
  the bag of exp(-W * local_per_lag), a soft minimum over lags of the per-lag loss (each lag's
  likelihood is the product over the window's steps). The softmax over units in the attention is the
  contrast: the other times' units are the negatives, so the term needs no batch collective.

Conventions: `attention` (B, W, T): W video steps (queries) over T current units (keys), the video
window's last step aligned with the units' last (the current history of `pipeline.step_sequence`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def span_mass(attention: jax.Array, lags: jax.Array, radius: int) -> jax.Array:
  """(B, P, W): the attention mass of each video step on the units within `radius` steps of its own
  step shifted back by each of the P `lags` (one broadcast comparison, no loop over lags or steps)."""
  window, units = attention.shape[-2:]
  own = units - window + jnp.arange(window)                                   # (W,) unit of each step at lag 0
  centre = own[None, :] - jnp.asarray(lags)[:, None]                           # (P, W)
  near = jnp.abs(jnp.arange(units)[None, None, :] - centre[..., None]) <= radius  # (P, W, T)
  return jnp.einsum("bwt,pwt->bpw", attention, near.astype(attention.dtype))


def local_per_lag(attention: jax.Array, lags: jax.Array, radius: int, eps: float = 1e-8) -> jax.Array:
  """(B, P): AlignVSR's local loss at each lag, -mean over the W steps of log(mass on the step's span)."""
  return -jnp.mean(jnp.log(span_mass(attention, lags, radius) + eps), axis=-1)


def local_alignment(attention: jax.Array, lags: jax.Array, radius: int) -> jax.Array:
  """The mean over the batch of the soft minimum over the bag of `lags` of `local_per_lag`:
  -(1/W) log mean_lag exp(-W * local_per_lag), one lag explaining every step of a window."""
  window = attention.shape[-2]
  per_lag = local_per_lag(attention, lags, radius)
  return jnp.mean(-(jax.nn.logsumexp(-window * per_lag, axis=-1) - math.log(per_lag.shape[-1])) / window)
