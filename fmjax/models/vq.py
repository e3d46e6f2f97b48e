"""One VQ codebook shared by video and current, kept by multimodal EMA (Uni-Code).

The codebook is not a parameter: its state lives in the Flax collection `vq_ema` (`embedding`,
`ema_count`, `ema_weight`, `unused_count`) and changes only when the module is applied with
`update=True` and that collection mutable, never through the optimiser. The numerics are pure
functions (`nearest_codes`, `ema_update`, `reset_dead_codes`) so they can be tested by hand:

* MM-EMA, for each modality m in turn (video, then current), with one-hot assignments A_m:
  count <- g*count + (1-g)*sum(A_m); Laplace smoothing; weight <- g*weight + (1-g)*((1-c)*A_m^T z_m +
  c*A_m^T z_other), where z_other is the other modality's feature at the same (batch, step) and c is
  `cross_weight` (1/2 for MM-EMA, 0 for plain EMA); embedding = weight / count.
* Data parallel: code counts and feature sums are `psum`-reduced over `axis_name` before the update,
  so every replica computes the same codebook.
* Dead codes: a code unused by both modalities for `reset_after` consecutive updates is moved near a
  used code drawn in proportion to its use, with the same (replicated) key on every replica.
* Cross-modal code matching (`code_matching_loss`) is Uni-Code's contrastive CMCM over the batch.

Everything here is float32 whatever the model's compute dtype: features are cast to float32 before
the distances, so code assignment, the EMA statistics, the commitment and the losses are float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.losses.collectives import gather_batch
from fmjax.losses.contrastive import global_cross_entropy

COLLECTION = "vq_ema"
State = dict[str, jax.Array]


def init_state(rng: jax.Array, num_codes: int, dim: int, scale: float) -> State:
  """Codes uniform in [-scale, scale]; count 1 and weight = embedding, so embedding = weight / count."""
  embedding = jax.random.uniform(rng, (num_codes, dim), jnp.float32, -scale, scale)
  return {"embedding": embedding, "ema_count": jnp.ones((num_codes,), jnp.float32), "ema_weight": embedding,
          "unused_count": jnp.zeros((num_codes,), jnp.int32)}


def nearest_codes(z: jax.Array, embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(indices (...,), squared L2 distances (..., K)) of each feature's nearest code."""
  distances = (jnp.sum(z ** 2, -1, keepdims=True) - 2 * z @ embedding.T + jnp.sum(embedding ** 2, -1))
  return jnp.argmin(distances, -1), distances


def _sums(indices: jax.Array, own: jax.Array, other: jax.Array, num_codes: int, axis_name: str | None):
  """(code counts (K,), A^T own (K, D), A^T other (K, D)) over every position, summed over devices."""
  one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)
  sums = (one_hot.sum(0), one_hot.T @ own.reshape(-1, own.shape[-1]), one_hot.T @ other.reshape(-1, own.shape[-1]))
  return jax.lax.psum(sums, axis_name) if axis_name else sums


def ema_update(state: State, z_video: jax.Array, z_current: jax.Array, idx_video: jax.Array,
               idx_current: jax.Array, *, decay: float = 0.99, epsilon: float = 1e-5, cross_weight: float = 0.5,
               axis_name: str | None = None) -> tuple[State, jax.Array]:
  """The MM-EMA update (video, then current); returns the new state and the global per-code use (K,)."""
  num_codes = state["embedding"].shape[0]
  count, weight = state["ema_count"], state["ema_weight"]
  used = jnp.zeros((num_codes,), jnp.float32)
  for indices, own, other in ((idx_video, z_video, z_current), (idx_current, z_current, z_video)):
    n_m, own_sum, other_sum = _sums(indices, own.astype(jnp.float32), other.astype(jnp.float32), num_codes,
                                    axis_name)
    count = decay * count + (1 - decay) * n_m
    total = count.sum()
    count = (count + epsilon) / (total + num_codes * epsilon) * total  # Laplace smoothing
    weight = decay * weight + (1 - decay) * ((1 - cross_weight) * own_sum + cross_weight * other_sum)
    used = used + n_m
  new = dict(state, ema_count=count, ema_weight=weight, embedding=weight / count[:, None])
  return new, used


def reset_dead_codes(state: State, used: jax.Array, rng: jax.Array, *, reset_after: int,
                     noise: float = 0.01) -> State:
  """Counts consecutive unused updates per code; codes unused `reset_after` times move near a used code."""
  unused = jnp.where(used > 0, 0, state["unused_count"] + 1)
  dead = unused >= reset_after
  pick, jitter = jax.random.split(rng)
  source = jax.random.categorical(pick, jnp.log(used), shape=used.shape)  # only used codes can be drawn
  base = state["embedding"][source]
  scale = noise * jnp.sqrt(jnp.mean(base ** 2, -1, keepdims=True))
  fresh = base + scale * jax.random.normal(jitter, base.shape)
  keep = ~dead[:, None] | (used.sum() == 0)  # nothing used at all: nothing to copy from
  embedding = jnp.where(keep, state["embedding"], fresh)
  count = jnp.where(keep[:, 0], state["ema_count"], 1.0)
  return {"embedding": embedding, "ema_count": count, "ema_weight": embedding * count[:, None],
          "unused_count": jnp.where(dead, 0, unused).astype(jnp.int32)}


class SharedCodebook(nn.Module):
  """Quantises both modalities' semantic features (..., D) with one codebook (straight-through).

  Returns a dict with, per modality m in ('video', 'current'): `quantized_m` (straight-through),
  `codes_m` (indices), `distances_m` (..., K); and `commitment` = 2b|z_m - sg q(z_m)|^2 +
  b|z_m - sg q(z_other)|^2 summed over both modalities (means over elements). With `update=True` the
  `vq_ema` collection must be mutable and an rng stream `codebook` given (the same key on every replica).
  """
  num_codes: int = 400
  dim: int = 256
  decay: float = 0.99
  epsilon: float = 1e-5
  cross_weight: float = 0.5     # MM-EMA; 0 gives plain per-modality EMA
  commitment_cost: float = 0.25
  reset_after: int = 300        # 0 switches the dead-code reset off
  reset_noise: float = 0.01
  init_scale: float | None = None  # codes start uniform in +-init_scale; default 1/num_codes
  axis_name: str | None = None

  def setup(self):
    scale = self.init_scale if self.init_scale is not None else 1.0 / self.num_codes
    initial = {}

    def init(key: str) -> jax.Array:  # one draw for all four, so that embedding = weight / count holds
      if not initial:
        initial.update(init_state(self.make_rng("params"), self.num_codes, self.dim, scale))
      return initial[key]

    self.ema = {k: self.variable(COLLECTION, k, init, k)
                  for k in ("embedding", "ema_count", "ema_weight", "unused_count")}

  def lookup(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codes, code vectors) of features (..., D) of either modality; no update."""
    embedding = self.ema["embedding"].value
    codes, _ = nearest_codes(z.astype(jnp.float32), embedding)
    return codes, embedding[codes]

  def __call__(self, z_video: jax.Array, z_current: jax.Array, update: bool = False) -> dict[str, Any]:
    z_video, z_current = z_video.astype(jnp.float32), z_current.astype(jnp.float32)
    variables = self.ema
    state = {k: v.value for k, v in variables.items()}
    embedding = state["embedding"]
    out, quantized = {}, {}
    for name, z in (("video", z_video), ("current", z_current)):
      codes, distances = nearest_codes(z, embedding)
      quantized[name] = embedding[codes]
      out[f"codes_{name}"], out[f"distances_{name}"] = codes, distances
      out[f"quantized_{name}"] = z + jax.lax.stop_gradient(quantized[name] - z)
    sg = jax.lax.stop_gradient
    b = self.commitment_cost
    out["commitment"] = sum(2 * b * jnp.mean((z - sg(quantized[m])) ** 2) + b * jnp.mean((z - sg(quantized[o])) ** 2)
                            for m, o, z in (("video", "current", z_video), ("current", "video", z_current)))
    if update and not self.is_initializing():
      new, used = ema_update(state, sg(z_video), sg(z_current), out["codes_video"], out["codes_current"],
                             decay=self.decay, epsilon=self.epsilon, cross_weight=self.cross_weight,
                             axis_name=self.axis_name)
      if self.reset_after:
        new = reset_dead_codes(new, used, self.make_rng("codebook"), reset_after=self.reset_after,
                               noise=self.reset_noise)
      for k, v in variables.items():
        v.value = new[k]
      out["code_use"] = used
    return out


def code_matching_loss(distances_video: jax.Array, distances_current: jax.Array,
                       axis_name: str | None = None) -> jax.Array:
  """Cross-modal code matching (Uni-Code's CMCM) over (B, L, K) squared distances: contrastive, per sequence.

  Each sequence's code distribution per modality is the mean over its steps of softmax(-|z - e_k|);
  sequence i's video and current distributions are scored against every sequence j's by the negated
  symmetric cross-entropy S[i, j] = sum_k p_c,i log p_v,j + p_v,i log p_c,j, and InfoNCE over the
  (global) batch makes the same sequence the best match. Matching whole distributions across the
  batch rather than per step keeps the trivial answer (both modalities on one code) from scoring.
  """
  p_video, p_current = (jax.nn.softmax(-jnp.sqrt(jnp.maximum(d.astype(jnp.float32), 1e-12)), -1).mean(1)
                        for d in (distances_video, distances_current))
  log = lambda p: jnp.log(p + 1e-10)
  scores = (p_current @ log(gather_batch(p_video, axis_name)).T
            + p_video @ log(gather_batch(p_current, axis_name)).T)  # (local B, global B)
  return global_cross_entropy(scores, axis_name)


def perplexity(code_counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code-use distribution: 1 when one code takes everything, K when use is uniform.

  Here rather than with the codes' other statistics (`fmjax.analysis.codebook_stats`): the pretraining
  step logs it every step from the module's `code_use`, as it does the commitment."""
  code_counts = code_counts.astype(jnp.float32)
  p = code_counts / jnp.maximum(code_counts.sum(), 1)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0)))
