"""The vmapped lead-time search against a plain loop and against toy signals with a known shift."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from fmjax.analysis import lag_search
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
  out = lag_search.search(_toy_apply, variables, video, history, window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0)
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
  chunked = lag_search.search(_toy_apply, variables, video, history, window=WINDOW, max_lag=MAX_LAG,
                            step_seconds=2.0, chunk=8)  # 21 lags in chunks of 8: the padding is dropped
  np.testing.assert_allclose(chunked.similarity, out.similarity, atol=1e-6)


def test_search_recovers_a_known_shift_exactly():
  rng = np.random.default_rng(1)
  shifts = np.array([0, 7, 13, MAX_LAG])
  history = rng.normal(size=(len(shifts), STEPS, 3)).astype(np.float32)
  # Each video window is the current as it was `shift` steps before the history's end.
  video = np.stack([h[STEPS - s - WINDOW:STEPS - s] for h, s in zip(history, shifts)])
  out = lag_search.search(_identity_apply, None, jnp.asarray(video), jnp.asarray(history), window=WINDOW,
                        max_lag=MAX_LAG, step_seconds=2.0)
  np.testing.assert_array_equal(np.asarray(out.lead_s), shifts * 2.0)
  assert np.all(np.asarray(out.confidence) > 0.1)


def test_no_anomaly_gives_no_lead_and_a_short_history_is_an_error():
  rng = np.random.default_rng(2)
  video = jnp.asarray(rng.normal(size=(2, WINDOW, 3)), jnp.float32)
  history = jnp.asarray(rng.normal(size=(2, STEPS, 3)), jnp.float32)
  out = lag_search.search(_identity_apply, None, video, history, window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0,
                        abnormal=jnp.array([True, False]))
  assert np.isfinite(float(out.lead_s[0])) and np.isnan(float(out.lead_s[1]))
  assert float(out.confidence[1]) == 0.0
  with pytest.raises(ValueError, match="current history of 24 steps is too short by 1"):
    lag_search.search(_identity_apply, None, video, history[:, :24], window=WINDOW, max_lag=MAX_LAG - 1,
                    step_seconds=2.0)


def test_factorised_search_equals_embedding_every_window():
  model = align.Aligner(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4, video_temporal="steps",
                        current_temporal="steps")
  rng = np.random.default_rng(4)
  video = jnp.asarray(rng.integers(0, 255, (2, WINDOW, 1, 8, 8, 3)), jnp.uint8)
  history = jnp.asarray(rng.normal(10000, 1500, (2, STEPS, 4, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), video=video, current=history[:, None, :WINDOW])
  apply_fn = align.embed_fn(model)
  kw = dict(window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0)
  full = lag_search.search(apply_fn, variables, video, history, **kw)
  factorised = lag_search.search(apply_fn, variables, video, history, pool_steps=align.unit_per_step, **kw)
  np.testing.assert_allclose(factorised.similarity, full.similarity, atol=1e-5)


def test_lag_prior_by_hand():
  # One estimate at lag 2 on lags 0..4, bandwidth 1, half of it uniform: 0.5 * kernel / sum + 0.5 / 5.
  kernel = np.exp(-0.5 * (np.arange(5) - 2.0) ** 2)
  expected = 0.5 * kernel / kernel.sum() + 0.1
  prior = lag_search.lag_prior(jnp.array([2.0, np.nan]), 4, bandwidth=1.0, floor=0.5)  # NaN: no estimate
  np.testing.assert_allclose(np.exp(np.asarray(prior)), expected, rtol=1e-6)
  uniform = lag_search.lag_prior(jnp.array([np.nan]), 4, bandwidth=1.0, floor=0.5)
  np.testing.assert_allclose(np.exp(np.asarray(uniform)), np.full(5, 0.2), rtol=1e-6)
  # Silverman: 0.9 * min(std 11.18, IQR 15 / 1.34) * 4^(-1/5) for 0, 10, 20, 30.
  spread = min(np.sqrt(125.0), 15.0 / 1.34)
  assert float(lag_search.silverman_bandwidth(jnp.array([0.0, 10.0, 20.0, 30.0, np.nan]))) == pytest.approx(
      0.9 * spread * 4 ** -0.2, rel=1e-5)
  with pytest.raises(ValueError, match="0 < floor <= 1"):
    lag_search.lag_prior(jnp.array([2.0]), 4, bandwidth=1.0, floor=0.0)


def test_a_prior_picks_between_two_equally_similar_lags():
  # The video window repeats in the history at shifts 3 and 15: equal similarity, and the prior decides.
  rng = np.random.default_rng(5)
  pattern = rng.normal(size=(WINDOW, 3)).astype(np.float32)
  history = rng.normal(size=(STEPS, 3)).astype(np.float32)
  for shift in (3, 15):
    history[STEPS - shift - WINDOW:STEPS - shift] = pattern
  kw = dict(window=WINDOW, max_lag=MAX_LAG, step_seconds=2.0)
  plain = lag_search.search(_identity_apply, None, jnp.asarray(pattern[None]), jnp.asarray(history[None]), **kw)
  assert float(plain.lead_s[0]) == 6.0  # a tie: argmax takes the first
  prior = lag_search.lag_prior(jnp.array([14.0, 15.0, 16.0]), MAX_LAG, bandwidth=2.0, floor=0.1)
  posterior = lag_search.search(_identity_apply, None, jnp.asarray(pattern[None]), jnp.asarray(history[None]),
                              log_prior=prior, temperature=0.1, **kw)
  assert float(posterior.lead_s[0]) == 30.0
  np.testing.assert_array_equal(posterior.similarity, plain.similarity)  # the curve is the plain one
  with pytest.raises(ValueError, match=r"log_prior has shape \(5,\); the search over lags 0..20 needs \(21,\)"):
    lag_search.search(_identity_apply, None, jnp.asarray(pattern[None]), jnp.asarray(history[None]),
                    log_prior=jnp.zeros(5), **kw)
