"""Transformer and convolution building blocks shared by the FmFormer variants.

They reproduce the official PyTorch blocks numerically, which pins a few details Flax defaults
differ on: LayerNorm epsilon 1e-5, exact (erf) GELU, bias-free qkv projections, BatchNorm epsilon
1e-5. `dtype` is the matmul/convolution dtype (e.g. bfloat16 on accelerators); parameters and
normalisation stay float32 (a LayerNorm of a bfloat16 input gives float32, so a residual stream
stays float32 and only the Dense/Conv inputs and outputs are bfloat16). `compute_dtype` reads a
model's `dtype` field, which configs give by name.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax import errors
from fmjax.models import attention

LAYER_NORM_EPSILON = 1e-5
Dtype = Any


def compute_dtype(dtype: Dtype) -> jnp.dtype:
  """A model's `dtype` field (a dtype or its name, e.g. 'bfloat16' from a config) as a floating dtype;
  anything else is a ConfigError."""
  try:
    if dtype is None:
      raise TypeError
    resolved = jnp.dtype(dtype)
  except TypeError:
    raise errors.ConfigError(f"dtype={dtype!r} is not a dtype (e.g. 'float32', 'bfloat16')") from None
  if not jnp.issubdtype(resolved, jnp.floating):
    raise errors.ConfigError(f"dtype={dtype!r} is not a floating-point dtype (e.g. 'float32', 'bfloat16')")
  return resolved


def layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=name)


def attend(queries: jax.Array, keys: jax.Array, values: jax.Array, heads: int) -> jax.Array:
  """Scaled dot-product attention of (B, N, heads*D) queries on (B, M, heads*D) keys/values."""
  b, n, inner = queries.shape
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, inner // heads)
  out = attention.dot_product_attention(split(queries), split(keys), split(values))
  return out.reshape(b, n, inner)


class OutProjection(nn.Module):
  """Linear projection of concatenated heads back to the model width (identity for one full head)."""
  dim: int
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.heads == 1 and self.head_dim == self.dim:
      return x
    return nn.Dense(self.dim, dtype=self.dtype, name="proj")(x)


class SelfAttention(nn.Module):
  """Pre-norm multi-head self-attention; returns the residual update (the caller adds it)."""
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inner = self.heads * self.head_dim
    y = layer_norm("norm")(x)
    q, k, v = jnp.split(nn.Dense(3 * inner, use_bias=False, dtype=self.dtype, name="qkv")(y), 3, axis=-1)
    out = attend(q, k, v, self.heads)
    return OutProjection(x.shape[-1], self.heads, self.head_dim, self.dtype, name="out")(out)


class CrossAttention(nn.Module):
  """Bidirectional cross-attention: stream a queries stream b and b queries a, each with own norms."""
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    inner = self.heads * self.head_dim
    dense = lambda name: nn.Dense(3 * inner, use_bias=False, dtype=self.dtype, name=name)
    qa, ka, va = jnp.split(dense("a_qkv")(layer_norm("a_norm")(a)), 3, axis=-1)
    qb, kb, vb = jnp.split(dense("b_qkv")(layer_norm("b_norm")(b)), 3, axis=-1)
    out_a = attend(qa, kb, vb, self.heads)
    out_b = attend(qb, ka, va, self.heads)
    project = lambda name, x, width: OutProjection(width, self.heads, self.head_dim, self.dtype, name=name)(x)
    return project("a_out", out_a, a.shape[-1]), project("b_out", out_b, b.shape[-1])


class FeedForward(nn.Module):
  """Pre-norm MLP with exact GELU; returns the residual update."""
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = layer_norm("norm")(x)
    y = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(y)
    y = nn.gelu(y, approximate=False)
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class PatchEmbed(nn.Module):
  """LayerNorm(patch) -> Dense(dim) -> LayerNorm(dim) over flattened patches or current rows."""
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    x = layer_norm("patch_norm")(patches)
    x = nn.Dense(self.dim, dtype=self.dtype, name="proj")(x)
    return layer_norm("token_norm")(x)


class Upsample2x(nn.Module):
  """Transposed convolution with kernel 2 and stride 2 (no overlap), as a matmul + pixel shuffle.

  The kernel is stored (2, 2, in, out) like `nn.ConvTranspose`; output pixel (2i+a, 2j+b) is
  x[i, j] @ kernel[a, b] + bias, which is exactly PyTorch's ConvTranspose2d(k=2, s=2, p=0).
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    y = jnp.einsum("bhwc,xycf->bhxwyf", x.astype(self.dtype), kernel.astype(self.dtype))
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias


class ResidualConvUnit(nn.Module):
  """ReLU -> BatchNorm -> 3x3 conv, plus the skip.

  The official unit applies an in-place ReLU to its input, so its skip carries relu(x), not x.
  """
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.relu(x)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.axis_name if train else None, name="bn")(x)
    y = nn.Conv(x.shape[-1], (3, 3), padding=1, dtype=self.dtype, name="conv")(y)
    return y + x
