"""The codes' statistics: the re-pairing tests of agreement and mutual information, and the plug-in
mutual information, on hand-made codes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmjax.analysis import codebook_stats


def test_agreement_test_by_hand():
  key = jax.random.key(0)
  # Two sequences of one step that agree: a permutation keeps them (1.0) or swaps them (0.0), each half the time.
  two = jnp.array([[0], [1]])
  out = codebook_stats.agreement_test(two, two, key, permutations=400)
  assert float(out["agreement"]) == 1.0
  assert float(out["null_mean"]) == pytest.approx(0.5, abs=0.1) and float(out["p"]) == pytest.approx(0.5, abs=0.1)
  # 50 sequences of 4 steps, each on its own code in both modalities: only the identity permutation
  # agrees everywhere (others only at their fixed points), so p is the smallest possible and z is large.
  own = jnp.repeat(jnp.arange(50)[:, None], 4, axis=1)
  out = codebook_stats.agreement_test(own, own, key, permutations=99)
  assert float(out["p"]) == pytest.approx(1 / 100) and float(out["z"]) > 10
  # Independent codes: the observed agreement is one draw of the null.
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.integers(0, 5, (200, 10))) for _ in range(2))
  out = codebook_stats.agreement_test(a, b, key, permutations=200)
  assert float(out["null_mean"]) == pytest.approx(0.2, abs=0.01) and abs(float(out["z"])) < 3


def test_mutual_information_of_hand_made_codes():
  """Equal fair bits share 1 bit; independent ones 0; a 4-symbol copy 2 bits."""
  same = jnp.array([0, 1, 0, 1])
  assert float(codebook_stats.mutual_information_bits(same, same, 2, 2)) == pytest.approx(1.0)
  independent = codebook_stats.mutual_information_bits(jnp.array([0, 0, 1, 1]), jnp.array([0, 1, 0, 1]), 2, 2)
  assert float(independent) == pytest.approx(0.0)
  four = jnp.array([0, 1, 2, 3, 3, 2, 1, 0])
  assert float(codebook_stats.mutual_information_bits(four, four, 4, 4)) == pytest.approx(2.0)


def test_mutual_information_test_tells_shared_codes_from_independent_ones():
  rng = np.random.default_rng(0)
  video, key = rng.integers(0, 6, size=(60, 5)), jax.random.PRNGKey(0)
  shared = codebook_stats.mutual_information_test(jnp.asarray(video), jnp.asarray(video), key, 6, 200)
  assert shared["p"] < 0.01 and shared["z"] > 5 and shared["bits"] > shared["null_mean"]
  other = rng.integers(0, 6, size=(60, 5))
  independent = codebook_stats.mutual_information_test(jnp.asarray(video), jnp.asarray(other), key, 6, 200)
  assert independent["p"] > 0.05 and independent["null_mean"] > 0  # the plug-in bias, carried by the null
