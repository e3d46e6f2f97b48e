"""The contrastive losses against loop-written references, and across devices: the aligner's and the global-batch
cross-entropy that they, Cross-CPC and code matching share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fmjax.losses import contrastive
from fmjax.losses.collectives import gather_batch


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
  video, candidates = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 5, 4)))
  hard = _unit(rng.normal(size=(3, 2, 4)))
  by_hand = _mil_nce_by_hand(video, candidates, 0.5)
  assert float(contrastive.mil_nce(video, candidates, 0.5)) == pytest.approx(by_hand, rel=1e-5)
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


def _global_cross_entropy_forms(x, hard, y, axis_name=None):
  """The three forms of `global_cross_entropy` on one device's shard: one own key (with a leading step axis,
  as CPC), a bag of 3 with extra negatives (MIL-NCE), positives (SupCon)."""
  keys = gather_batch(x, axis_name)
  logits = jnp.einsum("btd,ctd->tbc", x, keys)                                    # (T, local B, global B)
  bags = jnp.repeat(keys[:, 0], 3, axis=0)                                        # 3 keys per row
  return jnp.stack([
      contrastive.global_cross_entropy(logits, axis_name),
      contrastive.global_cross_entropy(x[:, 0] @ bags.T, axis_name, bag=3, extra_negatives=hard),
      contrastive.global_cross_entropy(logits[0], axis_name, positives=y[:, None] == gather_batch(y, axis_name))])


def test_global_cross_entropy_by_hand_and_on_4_devices_equals_1_device(four_devices):
  rng = np.random.default_rng(3)
  x, hard = rng.normal(size=(8, 2, 4)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)
  labels = np.array([0, 1, 1, 0, 2, 2, 3, 3])  # every anchor has a partner, so each device's mean is the global one
  single = _global_cross_entropy_forms(x, hard, labels)
  # One own key: -log softmax at the diagonal, per step, averaged over steps and rows.
  logits = np.einsum("btd,ctd->tbc", x, x)
  by_hand = np.mean([-(scores[i, i] - np.log(np.exp(scores[i]).sum())) for scores in logits for i in range(8)])
  assert float(single[0]) == pytest.approx(by_hand, rel=1e-5)
  # Three copies of the own key and the extra negative: -log(3 e^own / (3 sum e^keys + e^hard)).
  scores = x[:, 0] @ x[:, 0].T
  by_hand = np.mean([np.log(3 * np.exp(scores[i]).sum() + np.exp(hard[i]).sum()) - np.log(3 * np.exp(scores[i, i]))
                     for i in range(8)])
  assert float(single[1]) == pytest.approx(by_hand, rel=1e-5)
  assert float(single[2]) == pytest.approx(float(contrastive.supervised_contrastive(x[:, 0], labels, 1.0)), rel=1e-6)
  mesh = Mesh(np.array(four_devices), ("data",))
  mean_of_shards = lambda *shard: jax.lax.pmean(_global_cross_entropy_forms(*shard, "data"), "data")
  sharded = jax.jit(jax.shard_map(mean_of_shards, mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P(),
                                  check_vma=False))
  np.testing.assert_allclose(sharded(x, hard, labels), single, rtol=1e-5)
