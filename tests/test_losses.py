"""The aligner's contrastive losses against loop-written references, and across devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from fmjax.losses import contrastive


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mil_nce_by_hand(video, candidates, temperature, hard=None):
  b, p, _ = candidates.shape
  total = 0.0
  for i in range(b):
    positive = sum(np.exp(video[i] @ candidates[i, k] / temperature) for k in range(p))
    every = sum(np.exp(video[i] @ candidates[j, k] / temperature) for j in range(b) for k in range(p))
    if hard is not None:
      every += sum(np.exp(video[i] @ h / temperature) for h in hard[i])
    total -= np.log(positive / every)
  return total / b


def test_mil_nce_by_hand_and_with_one_lag_it_is_info_nce():
  rng = np.random.default_rng(0)
  video, candidates, hard = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 5, 4))), _unit(rng.normal(size=(3, 2, 4)))
  assert float(contrastive.mil_nce(video, candidates, 0.5)) == pytest.approx(_mil_nce_by_hand(video, candidates, 0.5), rel=1e-5)
  assert float(contrastive.mil_nce(video, candidates, 0.5, hard)) == pytest.approx(
      _mil_nce_by_hand(video, candidates, 0.5, hard), rel=1e-5)
  # One candidate lag: the classic InfoNCE, -log softmax of the matching pair.
  current = candidates[:, 0]
  logits = video @ current.T / 0.5
  expected = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(1)))
  assert float(contrastive.mil_nce(video, candidates[:, :1], 0.5)) == pytest.approx(expected, rel=1e-5)
  assert float(contrastive.info_nce(video, current, 0.5)) == pytest.approx(expected, rel=1e-5)


def test_supervised_contrastive_by_hand():
  rng = np.random.default_rng(1)
  emb, labels, t = _unit(rng.normal(size=(4, 3))), np.array([0, 1, 0, 2]), 0.3
  # Anchors 0 and 2 have one partner each; 1 and 3 have none and are left out.
  expected = 0.0
  for i, j in ((0, 2), (2, 0)):
    others = [k for k in range(4) if k != i]
    expected -= emb[i] @ emb[j] / t - np.log(sum(np.exp(emb[i] @ emb[k] / t) for k in others))
  assert float(contrastive.supervised_contrastive(emb, labels, t)) == pytest.approx(expected / 2, rel=1e-5)


def test_losses_on_4_devices_equal_1_device(four_devices):
  rng = np.random.default_rng(2)
  video, candidates = _unit(rng.normal(size=(8, 4))), _unit(rng.normal(size=(8, 3, 4)))
  labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
  mesh = Mesh(np.array(four_devices), ("data",))

  def both(v, c, y, axis_name=None):
    return jnp.stack([contrastive.mil_nce(v, c, 0.2, axis_name=axis_name),
                      contrastive.supervised_contrastive(v, y, 0.2, axis_name=axis_name)])

  sharded = jax.jit(jax.shard_map(lambda v, c, y: jax.lax.pmean(both(v, c, y, "data"), "data"), mesh=mesh,
                                  in_specs=(P("data"), P("data"), P("data")), out_specs=P(), check_vma=False))
  np.testing.assert_allclose(sharded(video, candidates, labels), both(video, candidates, labels), rtol=1e-5)
