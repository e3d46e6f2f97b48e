"""The attention kernels: the chunked CPU one with its recomputing backward pass, XLA's, and the choice between
them per platform, all equal to plain softmax attention."""

import jax
import numpy as np
import pytest
from jax import export

from fmjax.models import attention
from fmjax.runtime import errors


def reference(q, k, v):
  scores = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(q.shape[-1])
  p = np.exp(scores - scores.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhnm,bmhd->bnhd", p, v)


@pytest.mark.parametrize("chunk", [1, 2, 6])
def test_values_and_gradients_match_plain_attention(chunk):
  rng = np.random.default_rng(0)
  q = rng.normal(size=(6, 7, 2, 4)).astype(np.float32)
  k, v = (rng.normal(size=(6, 5, 2, 4)).astype(np.float32) for _ in range(2))
  out = attention._attention(q, k, v, chunk)
  np.testing.assert_allclose(out, reference(q, k, v), atol=1e-5)
  weights = rng.normal(size=out.shape).astype(np.float32)
  loss = lambda fn: (lambda q, k, v: (fn(q, k, v) * weights).sum())
  ours = jax.grad(loss(lambda q, k, v: attention._attention(q, k, v, chunk)), argnums=(0, 1, 2))(q, k, v)
  plain = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, plain):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_chunk_is_the_largest_divisor_within_the_budget():
  # One example of 3 heads x 401 x 401 float32 scores is 1.93 MB; two fit in 4 MB, three would not
  # (and 3 does not divide 32 anyway).
  assert attention.chunk_size(32, 3, 401, 401) == 2
  assert attention.chunk_size(32, 3, 241, 241) == 4   # 0.70 MB each: 6 would fit, 4 divides 32
  assert attention.chunk_size(7, 3, 2000, 2000) == 1  # larger than the budget: one at a time


@pytest.mark.parametrize("implementation", attention.IMPLEMENTATIONS)
def test_every_implementation_matches_plain_attention_in_values_and_gradients(implementation):
  """'auto' (the CPU kernel here), 'cpu_chunked' and 'xla', against numpy and jax.nn's gradients."""
  rng = np.random.default_rng(1)
  q = rng.normal(size=(4, 9, 3, 8)).astype(np.float32)
  k, v = (rng.normal(size=(4, 6, 3, 8)).astype(np.float32) for _ in range(2))
  fn = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v, implementation))
  np.testing.assert_allclose(fn(q, k, v), reference(q, k, v), atol=1e-5)
  weights = rng.normal(size=(4, 9, 3, 8)).astype(np.float32)
  ours = jax.grad(lambda q, k, v: (fn(q, k, v) * weights).sum(), argnums=(0, 1, 2))(q, k, v)
  plain = jax.grad(lambda q, k, v: (jax.nn.dot_product_attention(q, k, v) * weights).sum(), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, plain):
    np.testing.assert_allclose(a, b, atol=1e-5)


def lowered_text(fn, platform: str, *args) -> str:
  return export.export(jax.jit(fn), platforms=(platform,))(*args).mlir_module()


def test_auto_lowers_to_the_cpu_kernel_on_cpu_and_to_xla_elsewhere():
  """The choice is made when lowering: the CPU program walks batch chunks (a while loop), the TPU and GPU ones
  do not; forcing an implementation gives it on every platform."""
  q = jax.ShapeDtypeStruct((8, 401, 3, 32), np.float32)
  auto = lambda q: attention.dot_product_attention(q, q, q)
  assert "stablehlo.while" in lowered_text(auto, "cpu", q)
  for platform in ("tpu", "cuda"):
    assert "stablehlo.while" not in lowered_text(auto, platform, q)
    assert "stablehlo.while" in lowered_text(lambda q: attention.dot_product_attention(q, q, q, "cpu_chunked"),
                                             platform, q)
  assert "stablehlo.while" not in lowered_text(lambda q: attention.dot_product_attention(q, q, q, "xla"), "cpu", q)


def test_an_unknown_implementation_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="model.attention='flash' is not one of"):
    attention.dot_product_attention(*(np.zeros((1, 2, 1, 4), np.float32),) * 3, "flash")
