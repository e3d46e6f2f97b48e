"""The AlignVSR-style aligner variant (configs/align.py:alignvsr): its local term by hand and its
cross-attention on a hand-built shift."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.losses import local_alignment
from fmjax.models import align as align_model

EPS = 1e-8


def _one_hot_attention(window: int, units: int, lead: int) -> np.ndarray:
  """(1, W, T): video step t attends to exactly the unit `lead` steps before its own."""
  attention = np.zeros((1, window, units), np.float32)
  attention[0, np.arange(window), units - window + np.arange(window) - lead] = 1.0
  return attention


def test_local_term_by_hand():
  window, units, lead, lags = 4, 12, 3, np.arange(7)
  attention = _one_hot_attention(window, units, lead)
  miss = -math.log(EPS)                                  # a step with no mass on its span
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(attention), lags, radius=0))
  np.testing.assert_allclose(per_lag[0], [miss, miss, miss, 0, miss, miss, miss], atol=1e-5)
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(attention), lags, radius=1))
  np.testing.assert_allclose(per_lag[0], [miss, miss, 0, 0, 0, miss, miss], atol=1e-5)
  # half the mass one step further back: at lag 3 (radius 0) every step has half its mass on the span
  split = 0.5 * attention + 0.5 * _one_hot_attention(window, units, lead + 1)
  per_lag = np.asarray(local_alignment.local_per_lag(jnp.asarray(split), lags, radius=0))
  np.testing.assert_allclose(per_lag[0, 3:5], [math.log(2), math.log(2)], rtol=1e-5)
  # the bag's term: -(1/W) log mean over the bag of prod over steps of the mass on the span
  bag = np.array([2, 3, 4, 5])
  expected = -math.log(np.mean([0.5 ** window if lag in (3, 4) else EPS ** window for lag in bag])) / window
  assert float(local_alignment.local_alignment(jnp.asarray(split), bag, radius=0)) == pytest.approx(expected, rel=1e-4)


def test_cross_attention_over_shifted_units_is_local_at_the_shift():
  """Video step features equal to the current's units `lead` steps earlier: with identity query, key
  and value maps, each step attends to its own unit, and the local term is lowest at lag `lead` alone
  (within `radius` of it with a radius)."""
  window, units, lead = 6, 20, 5
  dim = units                                            # one orthogonal feature vector per unit
  current = np.eye(units, dtype=np.float32)[np.random.default_rng(0).permutation(units)][None]
  video = current[:, units - window - lead:units - lead]
  eye = lambda scale: {"kernel": scale * np.eye(dim, dtype=np.float32), "bias": np.zeros(dim, np.float32)}
  params = {"positions": np.zeros((window, dim), np.float32), "query": eye(50.0), "key": eye(1.0), "value": eye(1.0)}
  attention, attended = align_model.CrossAlignment(dim).apply({"params": params}, video, current)
  np.testing.assert_allclose(np.asarray(attended), video, atol=1e-3)
  per_lag = np.asarray(local_alignment.local_per_lag(attention, np.arange(12), radius=0))[0]
  assert int(np.argmin(per_lag)) == lead and np.sum(per_lag <= per_lag[lead] + 1e-3) == 1
  per_lag = np.asarray(local_alignment.local_per_lag(attention, np.arange(12), radius=1))[0]
  np.testing.assert_array_equal(np.flatnonzero(per_lag <= per_lag[lead] + 1e-3), [lead - 1, lead, lead + 1])
  term = lambda bag: float(local_alignment.local_alignment(attention, np.array(bag), radius=0))
  # a bag that holds the lead costs only the uniform prior over its 4 lags; one without it, missing steps
  assert term([0, 3, lead, 9]) == pytest.approx(math.log(4) / window, abs=1e-3) and term([0, 3, 7, 9]) > 5
