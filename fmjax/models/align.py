"""The cross-modal aligner: video windows and current windows in one L2-normalised embedding space.

Each modality's window encoder reuses the pretrain job's per-step extractors and temporal Transformer
(`fmjax.models.encoders`), mean-pools the steps and projects (CLIP-style head) to `embed_dim`,
then L2-normalises. The temperature is learned (as its log, initialised at `init_temperature`) and
clipped to [0.01, 1]. `embed(modality, x)` is what the lead-time search calls (`fmjax.leadtime`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import encoders


class WindowEncoder(nn.Module):
  """(B, W, ...) raw steps of one modality -> (B, embed_dim), unit length."""
  modality: str
  dim: int = 128
  embed_dim: int = 64
  depth: int = 2
  heads: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    steps = encoders.SemanticEncoder(self.modality, self.dim, self.depth, self.heads, name="encoder")(x)
    pooled = steps.mean(axis=1)
    projected = nn.Dense(self.embed_dim, name="proj_out")(nn.gelu(nn.Dense(self.dim, name="proj_hidden")(pooled)))
    return projected / jnp.maximum(jnp.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)


class Aligner(nn.Module):
  """`__call__(video, current)` -> (video embeddings (B, e), current embeddings (..., e), temperature).

  `current` may carry extra leading axes after the batch (e.g. (B, P, W, R, 3): P candidate lags per
  sample); they are flattened for the encoder and restored.
  """
  dim: int = 128
  embed_dim: int = 64
  depth: int = 2
  heads: int = 4
  init_temperature: float = 0.1

  def setup(self):
    kw = dict(dim=self.dim, embed_dim=self.embed_dim, depth=self.depth, heads=self.heads)
    self.encoders = {m: WindowEncoder(m, **kw) for m in ("video", "current")}
    self.log_temperature = self.param("log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ())

  def embed(self, modality: str, x: jax.Array) -> jax.Array:
    return self.encoders[modality](x)

  def temperature(self) -> jax.Array:
    return jnp.clip(jnp.exp(self.log_temperature), 0.01, 1.0)

  def __call__(self, video: jax.Array, current: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    window_shape = current.shape[-3:]
    flat = self.embed("current", current.reshape(-1, *window_shape))
    return self.embed("video", video), flat.reshape(*current.shape[:-3], -1), self.temperature()
