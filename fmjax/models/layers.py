"""Transformer and convolution building blocks shared by the FmFormer variants.

They reproduce the official PyTorch blocks numerically, which pins a few details Flax defaults
differ on: LayerNorm epsilon 1e-5, exact (erf) GELU, bias-free qkv projections, BatchNorm epsilon
1e-5. Three are written for speed on CPU as well (their timings: bench/RESULTS.md): `gelu` uses
erf as PyTorch does; `QKVProjection` keeps the official single qkv weight but multiplies by its
three column blocks, so q, k and v land in buffers of their own instead of being sliced out of one;
`LayerNorm` has a hand-written backward. `dtype` is the matmul/convolution dtype (e.g. bfloat16 on
accelerators); parameters and normalisation stay float32 (a LayerNorm of a bfloat16 input gives
float32, so a residual stream stays float32 and only the Dense/Conv inputs and outputs are bfloat16).
`compute_dtype` reads a model's `dtype` field, which configs give by name.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import attention
from fmjax.runtime import errors

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


class NamedComputeDtype(nn.Module):
  """A model whose `dtype` field names its compute dtype (configs give it by name): a bad name is a
  ConfigError when the model is built, not when it is first applied."""

  def __post_init__(self):
    compute_dtype(self.dtype)
    super().__post_init__()


@jax.custom_vjp
def _normalize(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  return _normalize_fwd(x, scale, bias)[0]


def _normalize_fwd(x, scale, bias):
  centred = x - x.mean(-1, keepdims=True)
  inv_std = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + LAYER_NORM_EPSILON)
  normed = centred * inv_std
  return normed * scale + bias, (normed, inv_std, scale)


def _normalize_bwd(residuals, d_out):
  normed, inv_std, scale = residuals
  d_normed = d_out * scale
  d_x = inv_std * (d_normed - d_normed.mean(-1, keepdims=True)
                   - normed * (d_normed * normed).mean(-1, keepdims=True))
  rows = tuple(range(d_out.ndim - 1))
  return d_x, (d_out * normed).sum(rows), d_out.sum(rows)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


def _normalize_plain(x, scale, bias):
  """The same normalisation left to autodiff and XLA's fusion: the accelerators' path."""
  return _normalize_fwd(x, scale, bias)[0]


class LayerNorm(nn.Module):
  """LayerNorm over the last axis in float32, with `nn.LayerNorm`'s parameters (scale, bias) and
  PyTorch's epsilon and two-pass variance, and a hand-written backward pass.

  The backward keeps only the normalised input and 1/std and is the textbook three-term formula;
  autodiff of `nn.LayerNorm` keeps more, which costs XLA's CPU backend time in an FmFormer training
  step (bench/RESULTS.md). That backward was measured on a CPU only, so it is lowered for the CPU
  alone (`jax.lax.platform_dependent`); other platforms get plain autodiff.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return jax.lax.platform_dependent(x.astype(jnp.float32), scale, bias, cpu=_normalize, default=_normalize_plain)


def layer_norm(name: str) -> LayerNorm:
  return LayerNorm(name=name)


_SQRT_HALF = 0.7071067811865476


def gelu(x: jax.Array) -> jax.Array:
  """Exact GELU, x/2 (1 + erf(x/sqrt 2)), as torch.nn.GELU() computes it.

  `nn.gelu(x, approximate=False)` equals it but goes through erfc, whose XLA expansion (an
  exponential and selects) is slow on CPU (bench/RESULTS.md); erf is one rational polynomial.
  """
  return x * 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))


class QKVProjection(nn.Module):
  """Bias-free (in, 3*inner) projection to q, k, v: the official single `to_qkv` weight (the converted
  checkpoints' layout), applied as three matmuls with its column blocks, one per output."""
  inner: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], 3 * self.inner))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return tuple(x @ kernel[:, i * self.inner:(i + 1) * self.inner] for i in range(3))


def attend(queries: jax.Array, keys: jax.Array, values: jax.Array, heads: int, implementation: str = "auto"
           ) -> jax.Array:
  """Scaled dot-product attention of (B, N, heads*D) queries on (B, M, heads*D) keys/values
  (`implementation`: fmjax.models.attention's)."""
  b, n, inner = queries.shape
  split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, inner // heads)
  out = attention.dot_product_attention(split(queries), split(keys), split(values), implementation)
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
  """Pre-norm multi-head self-attention; returns the residual update (the caller adds it). `attention`: the
  kernel (fmjax.models.attention.IMPLEMENTATIONS)."""
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inner = self.heads * self.head_dim
    y = layer_norm("norm")(x)
    q, k, v = QKVProjection(inner, self.dtype, name="qkv")(y)
    out = attend(q, k, v, self.heads, self.attention)
    return OutProjection(x.shape[-1], self.heads, self.head_dim, self.dtype, name="out")(out)


class CrossAttention(nn.Module):
  """Bidirectional cross-attention: stream a queries stream b and b queries a, each with own norms."""
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    inner = self.heads * self.head_dim
    qa, ka, va = QKVProjection(inner, self.dtype, name="a_qkv")(layer_norm("a_norm")(a))
    qb, kb, vb = QKVProjection(inner, self.dtype, name="b_qkv")(layer_norm("b_norm")(b))
    out_a = attend(qa, kb, vb, self.heads, self.attention)
    out_b = attend(qb, ka, va, self.heads, self.attention)
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
    y = gelu(y)
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
