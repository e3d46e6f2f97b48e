"""The shared VQ codebook: MM-EMA against a hand-computed update, dead-code reset, data parallelism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fmjax.models import vq

# A 3-code, 2-d codebook: codes at the origin and the two unit vectors.
EMBEDDING = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
Z_VIDEO = np.array([[0.1, 0.0], [0.9, 0.2]], np.float32)     # nearest codes 0, 1
Z_CURRENT = np.array([[0.0, 0.2], [0.1, 0.8]], np.float32)   # nearest codes 0, 2


def _state(embedding=EMBEDDING):
  return {"embedding": jnp.asarray(embedding), "ema_count": jnp.ones(len(embedding)),
          "ema_weight": jnp.asarray(embedding), "unused_count": jnp.zeros(len(embedding), jnp.int32)}


def test_nearest_codes():
  codes, distances = vq.nearest_codes(jnp.asarray(Z_VIDEO), jnp.asarray(EMBEDDING))
  np.testing.assert_array_equal(codes, [0, 1])
  np.testing.assert_allclose(distances[1], [0.85, 0.05, 1.45], atol=1e-6)  # |(.9,.2)-e|^2 by hand


def test_mm_ema_matches_a_hand_computed_update():
  """decay 1/2, epsilon 0.1, cross weight 1/2; video first, then current (worked out in the comments).

  video  (codes 0,1): count .5*[1,1,1]+.5*[1,1,0] = [1,1,.5] -> smoothed (c+.1)/2.8*2.5
         weight .5*e + .25*A^T z_v + .25*A^T z_c: [.025,.05], [.75,.25], [0,.5]
  current(codes 0,2): count .5*prev + .5*[1,0,1] -> smoothed (c+.1)/2.55*2.25
         weight .5*prev + .25*A^T z_c + .25*A^T z_v: [.0375,.075], [.375,.125], [.25,.5]
  """
  codes_v, _ = vq.nearest_codes(jnp.asarray(Z_VIDEO), jnp.asarray(EMBEDDING))
  codes_c, _ = vq.nearest_codes(jnp.asarray(Z_CURRENT), jnp.asarray(EMBEDDING))
  new, used = vq.ema_update(_state(), jnp.asarray(Z_VIDEO), jnp.asarray(Z_CURRENT), codes_v, codes_c,
                            decay=0.5, epsilon=0.1, cross_weight=0.5)
  count = np.array([0.96271008, 0.52153361, 0.76575630])
  weight = np.array([[0.0375, 0.075], [0.375, 0.125], [0.25, 0.5]])
  np.testing.assert_allclose(new["ema_count"], count, rtol=1e-6)
  np.testing.assert_allclose(new["ema_weight"], weight, rtol=1e-6)
  np.testing.assert_allclose(new["embedding"], weight / count[:, None], rtol=1e-6)
  np.testing.assert_array_equal(used, [2, 1, 1])


def test_plain_ema_uses_only_the_own_modality():
  codes_v, _ = vq.nearest_codes(jnp.asarray(Z_VIDEO), jnp.asarray(EMBEDDING))
  codes_c, _ = vq.nearest_codes(jnp.asarray(Z_CURRENT), jnp.asarray(EMBEDDING))
  new, _ = vq.ema_update(_state(), jnp.asarray(Z_VIDEO), jnp.asarray(Z_CURRENT), codes_v, codes_c,
                         decay=0.5, epsilon=0.0, cross_weight=0.0)
  # code 1 (video only): .5*(.5*[1,0] + .5*[.9,.2]) after the current pass = [.475, .05]
  np.testing.assert_allclose(new["ema_weight"][1], [0.475, 0.05], rtol=1e-6)


def test_dead_code_reset_after_n_unused_updates_and_only_then():
  state = _state(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], np.float32))
  z = jnp.array([[0.1, 0.1], [-0.1, 0.2]])  # always code 0
  for step in range(1, 4):
    codes, _ = vq.nearest_codes(z, state["embedding"])
    state, used = vq.ema_update(state, z, z, codes, codes, decay=0.9)
    before = np.asarray(state["embedding"])
    state = vq.reset_dead_codes(state, used, jax.random.key(step), reset_after=3, noise=0.01)
    if step < 3:
      np.testing.assert_array_equal(state["unused_count"], [0, step, step])
      np.testing.assert_array_equal(state["embedding"], before)
  np.testing.assert_array_equal(state["unused_count"], [0, 0, 0])
  code0 = np.asarray(state["embedding"][0])
  for k in (1, 2):  # moved next to the only used code
    assert 0 < np.linalg.norm(state["embedding"][k] - code0) < 0.05 * np.linalg.norm(code0)
  np.testing.assert_allclose(state["embedding"], state["ema_weight"] / state["ema_count"][:, None], rtol=1e-6)


def _module(**kw):
  return vq.SharedCodebook(num_codes=8, dim=4, decay=0.8, reset_after=2, init_scale=1.0, **kw)


def test_module_keeps_state_in_its_collection_and_passes_gradients_straight_through():
  model = _module()
  zv, zc = jax.random.normal(jax.random.key(1), (2, 3, 5, 4))
  variables = model.init(jax.random.key(0), zv, zc)
  assert set(variables) == {vq.COLLECTION}
  out, updated = model.apply(variables, zv, zc, update=True, mutable=[vq.COLLECTION],
                             rngs={"codebook": jax.random.key(2)})
  assert not np.allclose(updated[vq.COLLECTION]["embedding"], variables[vq.COLLECTION]["embedding"])
  grad = jax.grad(lambda z: model.apply(variables, z, zc)["quantized_video"].sum())(zv)
  np.testing.assert_allclose(grad, np.ones_like(zv))
  assert out["codes_video"].shape == (3, 5) and out["distances_current"].shape == (3, 5, 8)


def test_codebook_is_identical_on_4_devices_and_on_1(four_devices):
  mesh = Mesh(np.array(four_devices), ("data",))
  zv, zc = jax.random.normal(jax.random.key(1), (2, 5, 8, 6, 4))  # 5 updates of a batch of 8
  variables = _module().init(jax.random.key(0), zv[0], zc[0])

  def run(model, z_video, z_current, variables):
    for t in range(z_video.shape[0]):
      _, variables = model.apply(variables, z_video[t], z_current[t], update=True, mutable=[vq.COLLECTION],
                                 rngs={"codebook": jax.random.key(t)})
    return variables

  single = jax.jit(functools.partial(run, _module()))(zv, zc, variables)
  sharded = jax.jit(jax.shard_map(functools.partial(run, _module(axis_name="data")), mesh=mesh,
                                  in_specs=(P(None, "data"), P(None, "data"), P()), out_specs=P(),
                                  check_vma=False))(zv, zc, variables)
  for key in ("embedding", "ema_count", "ema_weight", "unused_count"):
    np.testing.assert_allclose(sharded[vq.COLLECTION][key], single[vq.COLLECTION][key], atol=1e-5, err_msg=key)


def _cmcm_by_hand(distances_video: np.ndarray, distances_current: np.ndarray) -> float:
  """Uni-Code's code matching written out with loops: per-sequence mean of softmax(-sqrt(d)), the
  symmetric cross-entropy scores between every pair of sequences, then cross-entropy on the diagonal."""
  def dist(d):
    e = np.exp(-np.sqrt(d))
    return (e / e.sum(-1, keepdims=True)).mean(1)
  pv, pc = dist(distances_video), dist(distances_current)
  b = len(pv)
  loss = 0.0
  for i in range(b):
    s = [sum(pc[i, k] * np.log(pv[j, k] + 1e-10) + pv[i, k] * np.log(pc[j, k] + 1e-10) for k in range(pv.shape[1]))
         for j in range(b)]
    loss -= s[i] - np.log(np.sum(np.exp(s)))
  return loss / b


def test_code_matching_by_hand_and_across_devices(four_devices):
  rng = np.random.default_rng(0)
  dv, dc = (rng.uniform(0, 9, (4, 3, 5)).astype(np.float32) for _ in range(2))
  expected = _cmcm_by_hand(dv, dc)
  assert float(vq.code_matching_loss(jnp.asarray(dv), jnp.asarray(dc))) == pytest.approx(expected, rel=1e-5)
  # Matched distributions score better than the same distributions paired with other sequences.
  assert vq.code_matching_loss(dv, dv) < vq.code_matching_loss(dv, dv[::-1])
  # Under shard_map the other sequences come from the global batch: 4 devices give the 1-device loss.
  mesh = Mesh(np.array(four_devices), ("data",))
  sharded = jax.jit(jax.shard_map(lambda a, b: jax.lax.pmean(vq.code_matching_loss(a, b, "data"), "data"),
                                  mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P(), check_vma=False))
  assert float(sharded(dv, dc)) == pytest.approx(_cmcm_by_hand(dv, dc), rel=1e-5)


def test_perplexity():
  assert float(vq.perplexity(jnp.array([5.0, 0.0, 0.0]))) == pytest.approx(1.0)
  assert float(vq.perplexity(jnp.array([2.0, 2.0, 2.0, 2.0]))) == pytest.approx(4.0)
