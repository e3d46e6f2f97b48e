"""The vmapped lead-time search against a plain loop and against toy signals with a known shift."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from fmjax import leadtime
from fmjax.models import align

WINDOW, MAX_LAG, STEPS = 6, 20, 40


class _Toy(nn.Module):
  """Random per-modality linear embeddings of flattened windows."""

  @nn.compact
  def __call__(self, modality: str, x: jax.Array) -> jax.Array:
    return nn.Dense(8, name=modality)(x.reshape(x.shape[0], -1))


def _toy_apply(variables, modality, x):
  return _Toy().apply(variables, modality, x)


def _toy_variables():
  x = jnp.zeros((1, WINDOW, 3))
  video = _Toy().init(jax.random.key(0), "video", x)
  current = _Toy().init(jax.random.key(1), "current", x)
  return {"params": {**video["params"], **current["params"]}}


def _identity_apply(variables, modality, x):
  del variables, modality
  return x.reshape(x.shape[0], -1)


def test_vmapped_search_equals_a_loop_over_offsets():
  variables = _toy_variables()
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.normal(size=(3, WINDOW, 3)), jnp.float32)
  history = jnp.asarray(rng.normal(size=(3, STEPS, 3)), jnp.float32)
  out = leadtime.search(_toy_apply, variables, video, history, window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0)
  chex.assert_shape(out.similarity, (3, MAX_LAG + 1))
  chex.assert_type([out.lead_s, out.confidence, out.similarity], jnp.float32)
  embed = jax.jit(_toy_apply, static_argnums=1)
  for e in range(3):
    v = np.asarray(embed(variables, "video", video[e:e + 1]))[0]
    for lag in range(MAX_LAG + 1):
      end = STEPS - lag
      c = np.asarray(embed(variables, "current", history[e:e + 1, end - WINDOW:end]))[0]
      expected = v @ c / np.linalg.norm(v) / np.linalg.norm(c)
      assert float(out.similarity[e, lag]) == pytest.approx(expected, abs=1e-5)
  chunked = leadtime.search(_toy_apply, variables, video, history, window=WINDOW, max_lag=MAX_LAG,
                            step_seconds=2.0, chunk=8)  # 21 lags in chunks of 8: the padding is dropped
  np.testing.assert_allclose(chunked.similarity, out.similarity, atol=1e-6)


def test_search_recovers_a_known_shift_exactly():
  rng = np.random.default_rng(1)
  shifts = np.array([0, 7, 13, MAX_LAG])
  history = rng.normal(size=(len(shifts), STEPS, 3)).astype(np.float32)
  # Each video window is the current as it was `shift` steps before the history's end.
  video = np.stack([h[STEPS - s - WINDOW:STEPS - s] for h, s in zip(history, shifts)])
  out = leadtime.search(_identity_apply, None, jnp.asarray(video), jnp.asarray(history), window=WINDOW,
                        max_lag=MAX_LAG, step_seconds=2.0)
  np.testing.assert_array_equal(np.asarray(out.lead_s), shifts * 2.0)
  assert np.all(np.asarray(out.confidence) > 0.1)


def test_no_anomaly_gives_no_lead_and_a_short_history_is_an_error():
  rng = np.random.default_rng(2)
  video = jnp.asarray(rng.normal(size=(2, WINDOW, 3)), jnp.float32)
  history = jnp.asarray(rng.normal(size=(2, STEPS, 3)), jnp.float32)
  out = leadtime.search(_identity_apply, None, video, history, window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0,
                        abnormal=jnp.array([True, False]))
  assert np.isfinite(float(out.lead_s[0])) and np.isnan(float(out.lead_s[1]))
  assert float(out.confidence[1]) == 0.0
  with pytest.raises(ValueError, match="current history of 24 steps is too short by 1"):
    leadtime.search(_identity_apply, None, video, history[:, :24], window=WINDOW, max_lag=MAX_LAG - 1,
                    step_seconds=2.0)


def test_factorised_search_equals_embedding_every_window():
  model = align.Aligner(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4, video_temporal="steps",
                        current_temporal="steps")
  rng = np.random.default_rng(4)
  video = jnp.asarray(rng.integers(0, 255, (2, WINDOW, 1, 8, 8, 3)), jnp.uint8)
  history = jnp.asarray(rng.normal(10000, 1500, (2, STEPS, 4, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), video, history[:, None, :WINDOW])
  apply_fn = align.embed_fn(model)
  kw = dict(window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0)
  full = leadtime.search(apply_fn, variables, video, history, **kw)
  factorised = leadtime.search(apply_fn, variables, video, history, pool_steps=align.unit_per_step, **kw)
  np.testing.assert_allclose(factorised.similarity, full.similarity, atol=1e-5)
