"""The blocks written for speed equal their plain forms: values and gradients, against NumPy and autodiff."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from fmjax.models import layers


def test_layer_norm_values_and_gradients_match_the_textbook_formula():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(3, 5, 8)) * 4 + 2).astype(np.float32)
  scale, bias = (rng.normal(size=8).astype(np.float32) for _ in range(2))
  variables = {"params": {"scale": scale, "bias": bias}}
  ours = lambda x, scale, bias: layers.LayerNorm().apply({"params": {"scale": scale, "bias": bias}}, x)

  mean = x.mean(-1, keepdims=True)
  expected = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * scale + bias
  np.testing.assert_allclose(layers.LayerNorm().apply(variables, x), expected, atol=1e-5)

  def plain(x, scale, bias):  # autodiff of the same formula, no custom backward
    centred = x - x.mean(-1, keepdims=True)
    return centred / jnp.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5) * scale + bias

  weights = rng.normal(size=x.shape).astype(np.float32)
  loss = lambda fn: (lambda *args: (fn(*args) * weights).sum())
  for a, b in zip(jax.grad(loss(ours), argnums=(0, 1, 2))(x, scale, bias),
                  jax.grad(loss(plain), argnums=(0, 1, 2))(x, scale, bias)):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_layer_norm_has_flax_layer_norm_parameters_and_gives_float32():
  x = jnp.ones((2, 6), jnp.bfloat16)
  ours = layers.layer_norm("norm").init(jax.random.PRNGKey(0), x)
  flax_ln = nn.LayerNorm().init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_ln)
  assert layers.layer_norm("norm").apply(ours, x).dtype == jnp.float32


def test_gelu_is_the_exact_erf_gelu():
  x = np.array([-6.0, -1.5, -0.3, 0.0, 0.4, 2.0, 7.0], np.float32)
  expected = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
  np.testing.assert_allclose(layers.gelu(x), expected, rtol=1e-6, atol=1e-7)
  # d/dx x Phi(x) = Phi(x) + x phi(x)
  expected_grad = [0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                   for v in x]
  np.testing.assert_allclose(jax.vmap(jax.grad(layers.gelu))(x), expected_grad, rtol=1e-5, atol=1e-6)


def test_qkv_projection_equals_one_dense_split_in_three():
  x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype(np.float32)
  variables = layers.QKVProjection(inner=4).init(jax.random.PRNGKey(3), x)
  kernel = np.asarray(variables["params"]["kernel"])
  assert kernel.shape == (6, 12)  # the official single to_qkv weight, transposed
  dense = nn.Dense(12, use_bias=False).init(jax.random.PRNGKey(3), x)  # same name, same initialiser
  np.testing.assert_array_equal(kernel, dense["params"]["kernel"])
  for part, expected in zip(layers.QKVProjection(inner=4).apply(variables, x), np.split(x @ kernel, 3, axis=-1)):
    np.testing.assert_allclose(part, expected, atol=1e-5)
