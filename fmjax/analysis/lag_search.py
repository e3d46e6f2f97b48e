"""Lead-time search: how long before the visible anomaly the current shows it.

For a video window ending at step t and the current history before it, every current window ending
at t - lag (lag = 0 .. max_lag steps) is embedded with one `jax.vmap` over the offsets
(`lax.dynamic_slice` windows; `lax.map` over chunks of offsets when the history is long), compared with
the video window's embedding by cosine similarity, and the best lag is the lead estimate. A second
`vmap` batches many events. Everything is jitted, as functions of the encoder's apply-fn and variables,
so the aligner of `configs/align.py` and a pretrain run's semantic encoders are searched the same way.
Optionally a prior over lags (`lag_prior`, from other windows' estimates) turns the argmax into a
posterior's.

Conventions: `apply_fn(variables, modality, x)` embeds a batch of windows of one modality ('video' or
'current') into (B, d); a current history is (E, T, ...) steps of the current, its last step the one
aligned with the video window's last step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fmjax.runtime import errors

ApplyFn = Callable[[Any, str, jax.Array], jax.Array]
PoolFn = Callable[[jax.Array], jax.Array]


class LeadEstimate(NamedTuple):
  """Per event: the lead in seconds (NaN: no anomaly in the video window), a confidence (the peak's
  margin over the best similarity more than `margin_exclusion` steps away; 0 where there is no lead),
  and the similarity curve over lags (E, max_lag + 1)."""
  lead_s: jax.Array
  confidence: jax.Array
  similarity: jax.Array


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def window_at(history: jax.Array, lag: jax.Array, window: int) -> jax.Array:
  """The `window` steps of `history` (T, ...) that end `lag` steps before its last step."""
  start = history.shape[0] - window - lag
  return jax.lax.dynamic_slice_in_dim(history, start, window, axis=0)


def windows_at(history: jax.Array, lags: jax.Array, window: int) -> jax.Array:
  """(len(lags), window, ...) windows of `history` (T, ...), one per lag: one vmap over the offsets."""
  return jax.vmap(lambda lag: window_at(history, lag, window))(lags)


def similarity_curve(apply_fn: ApplyFn, variables: Any, video_embedding: jax.Array, history: jax.Array, *,
                     window: int, max_lag: int, chunk: int = 0, pool_steps: PoolFn | None = None) -> jax.Array:
  """Cosine similarity (max_lag + 1,) between one video embedding (d,) and the current windows of one
  history (T, ...) at every lag; `chunk` > 0 embeds the lags `chunk` at a time (memory).

  With `pool_steps`, the encoder factorises into per-step features and a pooling of a window of them:
  `apply_fn(variables, 'current_steps', history[None])` runs once over the whole history and each
  lag's embedding is `pool_steps` of its window of features, which gives the same numbers as
  embedding every window from scratch at a fraction of the cost.
  """
  lags = jnp.arange(max_lag + 1)
  if pool_steps is not None:
    features = apply_fn(variables, "current_steps", history[None])[0]        # (T, k)

  def embed(lag_batch: jax.Array) -> jax.Array:
    if pool_steps is not None:
      return _normalize(pool_steps(windows_at(features, lag_batch, window)))
    return _normalize(apply_fn(variables, "current", windows_at(history, lag_batch, window)))

  if chunk and chunk < lags.size:
    padded = -(-lags.size // chunk) * chunk
    lag_chunks = jnp.minimum(jnp.arange(padded), max_lag).reshape(-1, chunk)
    embeddings = jax.lax.map(embed, lag_chunks).reshape(padded, -1)[:lags.size]
  else:
    embeddings = embed(lags)
  return embeddings @ _normalize(video_embedding)


def check_history(history_steps: int, window: int, max_lag: int) -> None:
  """One clear error when a history cannot hold the window at the largest lag."""
  need = window + max_lag
  if history_steps < need:
    raise errors.ConfigError(f"current history of {history_steps} steps is too short by {need - history_steps}: "
                             f"a {window}-step window at lags up to {max_lag} needs {need} steps")


def silverman_bandwidth(samples: jax.Array) -> jax.Array:
  """Silverman's rule of thumb, 0.9 min(std, IQR / 1.34) n^(-1/5), over the finite samples; at least 1."""
  finite = jnp.isfinite(samples)
  n = jnp.maximum(finite.sum(), 1)
  spread = jnp.minimum(jnp.nanstd(samples), jnp.subtract(*jnp.nanpercentile(samples, jnp.array([75.0, 25.0]))) / 1.34)
  return jnp.maximum(jnp.nan_to_num(0.9 * spread * n ** -0.2), 1.0)


def lag_prior(lags: jax.Array, max_lag: int, *, bandwidth: float, floor: float = 0.1) -> jax.Array:
  """Log prior (max_lag + 1,) over lags from other windows' lead estimates (steps; NaN ignored).

  A Gaussian kernel density of `bandwidth` steps (e.g. `silverman_bandwidth(lags)`), mixed with a
  uniform share `floor` so that no lag is ruled out; with no finite estimate it is uniform. Estimated
  on the training split's visual onsets, it tells the search what leads this furnace has, which a
  window's similarity alone cannot when a steady stretch further back looks just like the anomaly's onset.
  """
  if not 0 < floor <= 1 or bandwidth <= 0:
    raise errors.ConfigError(f"lag prior: need bandwidth > 0 and 0 < floor <= 1, got {bandwidth} and {floor}")
  lags = jnp.asarray(lags, jnp.float32).reshape(-1)
  grid = jnp.arange(max_lag + 1, dtype=jnp.float32)
  kernel = jnp.exp(-0.5 * ((grid[:, None] - lags[None]) / bandwidth) ** 2)      # (max_lag + 1, N)
  density = jnp.sum(jnp.where(jnp.isfinite(lags)[None], kernel, 0.0), axis=1)
  total = density.sum()
  density = jnp.where(total > 0, density / jnp.where(total > 0, total, 1.0), 1.0 / grid.size)
  return jnp.log((1 - floor) * density + floor / grid.size)


@functools.partial(jax.jit, static_argnames=("step_seconds", "margin_exclusion", "refine_radius"))
def leads_from_curves(similarity: jax.Array, abnormal: jax.Array, *, step_seconds: float,
                      log_prior: jax.Array | None = None, temperature: float = 1.0, margin_exclusion: int = 5,
                      refine_radius: int = 0) -> LeadEstimate:
  """The lead estimates of similarity curves (E, max_lag + 1): see `search`, which calls it."""
  lags = jnp.arange(similarity.shape[-1])
  score = similarity if log_prior is None else similarity + temperature * log_prior[None]  # x temperature
  # The posterior picks the peak, the similarity places the lead on it: a prior's slope must not move it.
  mode = jnp.argmax(score, axis=-1)
  best = jnp.argmax(jnp.where(jnp.abs(lags[None] - mode[:, None]) <= refine_radius, similarity, -jnp.inf), -1)
  far = jnp.abs(lags[None] - mode[:, None]) > margin_exclusion
  runner_up = jnp.max(jnp.where(far, score, -jnp.inf), axis=-1)
  peak = jnp.take_along_axis(score, mode[:, None], -1)[:, 0]
  margin = jnp.where(jnp.isfinite(runner_up), peak - runner_up, 0.0)
  lead = jnp.where(abnormal, best * step_seconds, jnp.nan)
  return LeadEstimate(lead.astype(jnp.float32), jnp.where(abnormal, margin, 0.0), similarity)


@functools.partial(jax.jit, static_argnames=("apply_fn", "window", "max_lag", "chunk", "pool_steps"))
def _similarities(apply_fn, variables, video, history, *, window, max_lag, chunk, pool_steps):
  video_embeddings = apply_fn(variables, "video", video)                       # (E, d)
  curve = functools.partial(similarity_curve, apply_fn, variables, window=window, max_lag=max_lag, chunk=chunk,
                            pool_steps=pool_steps)
  return jax.vmap(curve)(video_embeddings, history)                            # (E, max_lag + 1)


def search(apply_fn: ApplyFn, variables: Any, video: jax.Array, history: jax.Array, *, window: int,
           max_lag: int, step_seconds: float, abnormal: jax.Array | None = None, chunk: int = 0,
           margin_exclusion: int = 5, pool_steps: PoolFn | None = None, log_prior: jax.Array | None = None,
           temperature: float = 1.0, refine_radius: int | None = None) -> LeadEstimate:
  """Lead estimates of E events from their video windows (E, ...) and current histories (E, T, ...).

  `abnormal` (E,) bool says which video windows show an anomaly (default: all); the others get no
  lead (NaN) and confidence 0 rather than a number. `apply_fn` must be hashable (a module's `apply`
  or a top-level function), as it is a static argument of the jitted search. `pool_steps` selects the
  factorised path of `similarity_curve` (same numbers, per-step features computed once).

  Without `log_prior` the lead is the argmax of the similarity. With one (`lag_prior`) the posterior
  picks the peak: a contrastive model scores a pair by exp(similarity / temperature), so the search
  maximises similarity / temperature + log_prior (`temperature`: the model's); the lead is then the
  similarity's argmax within `refine_radius` steps of that (default window // 4), as a prior's
  slope would otherwise pull the estimate off the peak's top towards the prior's. The confidence is
  the posterior's margin, in units of similarity; `similarity` stays the plain curve.
  """
  check_history(history.shape[1], window, max_lag)
  if video.shape[0] != history.shape[0]:
    raise ValueError(f"{video.shape[0]} video windows but {history.shape[0]} current histories")
  abnormal = jnp.ones(video.shape[0], bool) if abnormal is None else jnp.asarray(abnormal, bool)
  if log_prior is not None and jnp.shape(log_prior) != (max_lag + 1,):
    raise ValueError(f"log_prior has shape {jnp.shape(log_prior)}; the search over lags 0..{max_lag} needs "
                     f"({max_lag + 1},)")
  similarity = _similarities(apply_fn, variables, video, history, window=window, max_lag=max_lag, chunk=chunk,
                             pool_steps=pool_steps)
  return leads_from_curves(similarity, abnormal, step_seconds=step_seconds, log_prior=log_prior,
                           temperature=temperature, margin_exclusion=margin_exclusion,
                           refine_radius=window // 4 if refine_radius is None else refine_radius)
