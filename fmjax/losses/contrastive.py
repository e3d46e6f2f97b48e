"""Contrastive losses of the aligner (DESIGN.md, "Alignment and lead-time search").

Embeddings are L2-normalised before they get here; `temperature` divides the cosine similarities.
Under data parallelism (`axis_name`) the negatives come from the global batch, so every device
count gives the same loss.

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

from fmjax.losses.collectives import gather_batch, local_offset


def mil_nce(video: jax.Array, candidates: jax.Array, temperature: jax.Array, hard_negatives: jax.Array | None = None,
            axis_name: str | None = None) -> jax.Array:
  """Mean over the local batch of -log(sum over own candidates / sum over all) of exp(cos / temperature).

  video (B, d); candidates (B, P, d): each sample's current windows at its P candidate lags;
  hard_negatives (B, H, d) or None.
  """
  b, p, d = candidates.shape
  everyone = gather_batch(candidates, axis_name).reshape(-1, d)                   # (global B * P, d)
  logits = video @ everyone.T / temperature                                        # (B, global B * P)
  owner = jnp.arange(everyone.shape[0]) // p
  own = owner[None, :] == (local_offset(b, axis_name) + jnp.arange(b))[:, None]
  positive = jax.nn.logsumexp(jnp.where(own, logits, -jnp.inf), axis=-1)
  if hard_negatives is not None:
    logits = jnp.concatenate([logits, jnp.einsum("bd,bhd->bh", video, hard_negatives) / temperature], -1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive)


def info_nce(video: jax.Array, current: jax.Array, temperature: jax.Array, axis_name: str | None = None) -> jax.Array:
  """InfoNCE of video windows (B, d) against the current windows (B, d) at lag 0."""
  return mil_nce(video, current[:, None], temperature, axis_name=axis_name)


def supervised_contrastive(embeddings: jax.Array, labels: jax.Array, temperature: jax.Array,
                           axis_name: str | None = None) -> jax.Array:
  """SupCon over (B, d) embeddings with integer labels (B,); anchors without a same-label partner
  in the global batch contribute nothing."""
  b = embeddings.shape[0]
  everyone, their_labels = gather_batch(embeddings, axis_name), gather_batch(labels, axis_name)
  logits = embeddings @ everyone.T / temperature
  me = (local_offset(b, axis_name) + jnp.arange(b))[:, None] == jnp.arange(everyone.shape[0])[None, :]
  logits = jnp.where(me, -jnp.inf, logits)
  log_prob = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  same = (labels[:, None] == their_labels[None, :]) & ~me
  count = same.sum(-1)
  per_anchor = -jnp.sum(jnp.where(same, log_prob, 0.0), -1) / jnp.maximum(count, 1)
  has_partner = count > 0
  return jnp.sum(jnp.where(has_partner, per_anchor, 0.0)) / jnp.maximum(has_partner.sum(), 1)
