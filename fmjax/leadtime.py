"""Lead-time search: how long before the visible anomaly the current shows it (DESIGN.md, "Alignment").

For a video window ending at step t and the current history before it, every current window ending
at t - lag (lag = 0 .. max_lag steps) is embedded with one `jax.vmap` over the offsets
(`lax.dynamic_slice` windows; `lax.map` over chunks of offsets when the history is long), compared with
the video window's embedding by cosine similarity, and the best lag is the lead estimate. A second
`vmap` batches many events. Everything is one jitted function of the encoder's apply-fn and variables,
so the aligner of `configs/align.py` and a pretrain run's semantic encoders are searched the same way.

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
    raise ValueError(f"current history of {history_steps} steps is too short by {need - history_steps}: "
                     f"a {window}-step window at lags up to {max_lag} needs {need} steps")


@functools.partial(jax.jit, static_argnames=("apply_fn", "window", "max_lag", "step_seconds", "chunk",
                                             "margin_exclusion", "pool_steps"))
def _search(apply_fn, variables, video, history, abnormal, *, window, max_lag, step_seconds, chunk,
            margin_exclusion, pool_steps):
  video_embeddings = apply_fn(variables, "video", video)                       # (E, d)
  curve = functools.partial(similarity_curve, apply_fn, variables, window=window, max_lag=max_lag, chunk=chunk,
                            pool_steps=pool_steps)
  similarity = jax.vmap(curve)(video_embeddings, history)                      # (E, max_lag + 1)
  best = jnp.argmax(similarity, axis=-1)
  lags = jnp.arange(max_lag + 1)
  far = jnp.abs(lags[None] - best[:, None]) > margin_exclusion
  runner_up = jnp.max(jnp.where(far, similarity, -jnp.inf), axis=-1)
  peak = jnp.take_along_axis(similarity, best[:, None], -1)[:, 0]
  margin = jnp.where(jnp.isfinite(runner_up), peak - runner_up, 0.0)
  lead = jnp.where(abnormal, best * step_seconds, jnp.nan)
  return LeadEstimate(lead.astype(jnp.float32), jnp.where(abnormal, margin, 0.0), similarity)


def search(apply_fn: ApplyFn, variables: Any, video: jax.Array, history: jax.Array, *, window: int,
           max_lag: int, step_seconds: float, abnormal: jax.Array | None = None, chunk: int = 0,
           margin_exclusion: int = 5, pool_steps: PoolFn | None = None) -> LeadEstimate:
  """Lead estimates of E events from their video windows (E, ...) and current histories (E, T, ...).

  `abnormal` (E,) bool says which video windows show an anomaly (default: all); the others get no
  lead (NaN) and confidence 0 rather than a number. `apply_fn` must be hashable (a module's `apply`
  or a top-level function), as it is a static argument of the jitted search. `pool_steps` selects the
  factorised path of `similarity_curve` (same numbers, per-step features computed once).
  """
  check_history(history.shape[1], window, max_lag)
  if video.shape[0] != history.shape[0]:
    raise ValueError(f"{video.shape[0]} video windows but {history.shape[0]} current histories")
  abnormal = jnp.ones(video.shape[0], bool) if abnormal is None else jnp.asarray(abnormal, bool)
  return _search(apply_fn, variables, video, history, abnormal, window=window, max_lag=max_lag,
                 step_seconds=step_seconds, chunk=chunk, margin_exclusion=margin_exclusion, pool_steps=pool_steps)
