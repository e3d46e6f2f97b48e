"""Contrastive losses over the global batch (the aligner; Uni-Code).

Under data parallelism (`axis_name`) each device scores its own queries against the keys of every
device's shard (`collectives.gather_batch`), so every device count gives the same loss. One
cross-entropy serves them all:

* `global_cross_entropy`: the softmax cross-entropy of this device's queries against the global
  batch's keys, each row's targets being its own keys (found with `collectives.global_rows`), or, for
  SupCon, other rows' keys. The aligner's losses below, Cross-CPC's InfoNCE (`fmjax.models.cpc`) and
  the codebook's code matching (`fmjax.models.vq`) only build their logits.

The aligner's embeddings are L2-normalised before they get here; `temperature` divides the cosine
similarities.

* `mil_nce`: MIL-NCE (Miech et al., CVPR 2020). The true lag is unknown in training, so each video
  window has a bag of positives, the current windows at every candidate lag of the same recording and
  time; the negatives are every other sample's candidates, plus optional hard negatives (far-away
  windows of the same recording) that count for their own sample only. With one candidate lag it is
  InfoNCE.
* `info_nce`: the lag-0 ablation, one positive per video window.
* `supervised_contrastive`: video windows with the same label pull together, others apart (Khosla et
  al., 2020), over the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fmjax.losses.collectives import gather_batch, global_rows


def global_cross_entropy(logits: jax.Array, axis_name: str | None, *, bag: int | None = None,
                         extra_negatives: jax.Array | None = None, positives: jax.Array | None = None) -> jax.Array:
  """Mean contrastive cross-entropy of this device's queries against the keys of the global batch.

  logits (..., local B, global B [* bag]): each local query's scores against every device's keys in
  device order (as `gather_batch` lays them out); leading axes (CPC's steps) are batch axes too. A
  row's own keys are those of its position in the global batch (`global_rows`). Three forms:

  * One own key per row (`bag` None; Cross-CPC, code matching): the softmax cross-entropy with the
    integer targets `global_rows`, optax's.
  * A bag of `bag` consecutive own keys per row of the global batch (MIL-NCE): -log of the softmax
    mass on the bag, logsumexp(all) - logsumexp(own). `bag=1` gives the form above's value, but XLA
    fuses the two gradients differently (they differ in the last bits), so each caller keeps its own.
  * `positives` (local B, global B) bool (SupCon; `bag` None): the own key leaves the softmax and each
    other positive is a target of its own; a row's loss is the mean over its positives of -log softmax.

  `extra_negatives` (..., local B, H) join the softmax of their row only (MIL-NCE's hard negatives).
  The mean is over every row, or with `positives` over the rows with at least one (0 when none has).
  Each form keeps its former caller's op order, down to the order in which an input is used (an input's
  gradient adds up its uses' contributions in reverse order, and float addition is not associative), so
  that no loss and no gradient changed a bit when the callers came here.
  """
  b, keys = logits.shape[-2:]
  rows = global_rows(b, axis_name)
  if positives is not None:
    if bag is not None or extra_negatives is not None:
      raise ValueError("`positives` (SupCon) takes no bag and no extra negatives")
    me = jnp.arange(keys)[None, :] == rows[:, None]
    logits = jnp.where(me, -jnp.inf, logits)
    log_prob = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    positives = positives & ~me
    count = positives.sum(-1)
    per_row = -jnp.sum(jnp.where(positives, log_prob, 0.0), -1) / jnp.maximum(count, 1)
    has_positive = count > 0
    return jnp.sum(jnp.where(has_positive, per_row, 0.0)) / jnp.maximum(has_positive.sum(), 1)
  with_extra = lambda scores: scores if extra_negatives is None else jnp.concatenate([scores, extra_negatives], -1)
  if bag is None:
    targets = jnp.broadcast_to(rows, logits.shape[:-1])
    return optax.softmax_cross_entropy_with_integer_labels(with_extra(logits), targets).mean()
  own = (jnp.arange(keys) // bag)[None, :] == rows[:, None]                        # (local B, keys)
  target = jax.nn.logsumexp(jnp.where(own, logits, -jnp.inf), axis=-1)
  return jnp.mean(jax.nn.logsumexp(with_extra(logits), axis=-1) - target)


def mil_nce(video: jax.Array, candidates: jax.Array, temperature: jax.Array, hard_negatives: jax.Array | None = None,
            axis_name: str | None = None) -> jax.Array:
  """Mean over the local batch of -log(sum over own candidates / sum over all) of exp(cos / temperature).

  video (B, d); candidates (B, P, d): each sample's current windows at its P candidate lags;
  hard_negatives (B, H, d) or None.
  """
  p, d = candidates.shape[1:]
  everyone = gather_batch(candidates, axis_name).reshape(-1, d)                   # (global B * P, d)
  logits = video @ everyone.T / temperature                                        # (B, global B * P)
  # After the logits: `video`'s and `temperature`'s gradients add their uses up in this order.
  hard = None if hard_negatives is None else jnp.einsum("bd,bhd->bh", video, hard_negatives) / temperature
  return global_cross_entropy(logits, axis_name, bag=p, extra_negatives=hard)


def info_nce(video: jax.Array, current: jax.Array, temperature: jax.Array, axis_name: str | None = None) -> jax.Array:
  """InfoNCE of video windows (B, d) against the current windows (B, d) at lag 0."""
  return mil_nce(video, current[:, None], temperature, axis_name=axis_name)


def supervised_contrastive(embeddings: jax.Array, labels: jax.Array, temperature: jax.Array,
                           axis_name: str | None = None) -> jax.Array:
  """SupCon over (B, d) embeddings with integer labels (B,); anchors without a same-label partner
  in the global batch contribute nothing."""
  everyone, their_labels = gather_batch(embeddings, axis_name), gather_batch(labels, axis_name)
  return global_cross_entropy(embeddings @ everyone.T / temperature, axis_name,
                              positives=labels[:, None] == their_labels[None, :])
