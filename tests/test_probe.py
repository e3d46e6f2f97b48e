"""The probes on hand-made features: the linear one per step and the sequence head's max over steps."""

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import heads


def test_sequence_head_finds_one_abnormal_step_anywhere_in_the_sequence():
  """Codes 0-5 are ordinary vectors, code 6 is far out along the first axis; abnormal sequences hold one
  step of code 6 at a random position: a max over steps sees it, a mean would dilute it five times."""
  rng = np.random.default_rng(0)
  table = np.concatenate([rng.normal(size=(6, 3)), [[5.0, 0.0, 0.0]]]).astype(np.float32)
  n, steps = 400, 5
  codes = rng.integers(0, 6, size=(n, steps))
  labels = (np.arange(n) % 3 == 0).astype(np.int32)
  codes[labels == 1, rng.integers(0, steps, size=int(labels.sum()))] = 6
  train, test = slice(0, 300), slice(300, None)
  head = heads.fit_sequences(jnp.asarray(table), jnp.asarray(codes[train]), jnp.asarray(labels[train]),
                             jax.random.PRNGKey(0), steps=300)
  predicted = np.asarray(heads.predict_sequences(head, jnp.asarray(table), jnp.asarray(codes[test])))
  assert np.mean(predicted == labels[test]) > 0.95
  # The head equals Linear -> max -> Linear applied to the gathered step vectors themselves.
  x = (table[codes[test]] - np.asarray(head["mean"])) / np.asarray(head["std"])
  hidden = (x @ np.asarray(head["w1"]) + np.asarray(head["b1"])).max(1)
  np.testing.assert_array_equal(predicted, (hidden @ np.asarray(head["w2"]) + np.asarray(head["b2"])).argmax(-1))


def test_linear_probe_is_not_fooled_by_the_majority_class():
  """80 % normal steps and an uninformative feature: class weighting keeps it from predicting 'normal'
  everywhere, so its balanced accuracy stays near 0.5 while the informative feature gives ~1."""
  rng = np.random.default_rng(1)
  labels = (rng.random(500) < 0.2).astype(np.int32)
  informative = labels[:, None] * 3.0 + rng.normal(size=(500, 1))
  noise = rng.normal(size=(500, 1))
  for features, low, high in ((informative, 0.9, 1.0), (noise, 0.35, 0.65)):
    head = heads.fit(jnp.asarray(features, jnp.float32), jnp.asarray(labels), steps=300)
    predicted = np.asarray(heads.predict(head, jnp.asarray(features, jnp.float32)))
    bacc = (np.mean(predicted[labels == 1] == 1) + np.mean(predicted[labels == 0] == 0)) / 2
    assert low <= bacc <= high


def test_toc_keeps_the_dimensions_that_tell_codes_apart():
  """Three codes in 3 dimensions. Dimension 0: the same offset 2 on every code (pairs' mean product 4,
  variance 0: score -2.8); dimension 1: (1, -1, 0): pairs' mean product
  (1*-1 + 1*0 + -1*0)/3 = -1/3, variance 2/3: score 0.7/3 + 0.2 = 0.4333; dimension 2: (0.5, 0.5, 0.5)
  (mean product 0.25, variance 0: score -0.175). The top two are 1 and 2."""
  from fmjax.evals import probes
  embedding = np.array([[2.0, 1.0, 0.5], [2.0, -1.0, 0.5], [2.0, 0.0, 0.5]])
  np.testing.assert_array_equal(probes.toc_dimensions(embedding, 2), [1, 2])
  np.testing.assert_array_equal(probes.toc_dimensions(embedding, 1), [1])
