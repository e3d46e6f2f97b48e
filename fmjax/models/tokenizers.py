"""Video and current tokenisers of FmFormer.

A video clip (B, T, H, W, C) becomes one token per `frame_patch` x `patch_size` x `patch_size`
tube, flattened in the official (p1 p2 pf c) order; the dilated (multi-scale) tokens are the same
patching of the clip subsampled to every other pixel. A current window (B, S, 3) becomes one
token per row. Class tokens and learned position embeddings are initialised N(0, 1) as officially.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from fmjax.models import layers
from fmjax.runtime import errors


def check_video_geometry(image_size: int, patch_size: int, frames: int, frame_patch: int) -> None:
  """Raises ValueError naming the offending value when the clip cannot be cut into patches."""
  if image_size % patch_size:
    raise errors.ConfigError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
  if frames % frame_patch:
    raise errors.ConfigError(f"frames={frames} is not divisible by frame_patch={frame_patch}")


def num_video_tokens(image_size: int, patch_size: int, frames: int, frame_patch: int) -> int:
  return (image_size // patch_size) ** 2 * (frames // frame_patch)


def patchify(video: jax.Array, patch_size: int, frame_patch: int) -> jax.Array:
  """(B, T, H, W, C) -> (B, T/pf * H/p * W/p, p*p*pf*C), tokens in (f h w), features in (p1 p2 pf c)."""
  b, t, h, w, c = video.shape
  p, pf = patch_size, frame_patch
  x = video.reshape(b, t // pf, pf, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 5, 4, 6, 2, 7)
  return x.reshape(b, (t // pf) * (h // p) * (w // p), p * p * pf * c)


def dilate(video: jax.Array) -> jax.Array:
  """Nearest-neighbour resize to half the spatial resolution: every other pixel from the first."""
  return video[:, :, ::2, ::2]


def sinusoid_positions(length: int, dim: int) -> np.ndarray:
  """The fixed sine/cosine table of the official 'tri' position encoding, shape (1, length, dim)."""
  position = np.arange(length, dtype=np.float32)[:, None]
  div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * -(math.log(10000.0) / dim))
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(position * div)
  table[:, 1::2] = np.cos(position * div)
  return table[None]


class Tokens(nn.Module):
  """Embeds patches (or current rows), optionally prepends a class token, adds positions.

  `positions`: 'learned' (a (1, N[+1], dim) parameter `pos`), or 'sinusoid' (fixed table).
  """
  dim: int
  cls_token: bool = True
  positions: str = "learned"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    x = layers.PatchEmbed(self.dim, self.dtype, name="embed")(patches)
    b, n, _ = x.shape
    if self.cls_token:
      cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, self.dim))
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), x], axis=1)
      n += 1
    if self.positions == "sinusoid":
      return x + sinusoid_positions(n, self.dim)
    return x + self.param("pos", nn.initializers.normal(1.0), (1, n, self.dim))


class VideoTokens(nn.Module):
  """Standard video tokens with a class token, then (if `dilated`) the half-resolution tokens."""
  dim: int
  patch_size: int
  frame_patch: int
  dilated: bool
  positions: str = "learned"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array) -> jax.Array:
    x = Tokens(self.dim, True, self.positions, self.dtype, name="video_tokens")(
        patchify(video, self.patch_size, self.frame_patch))
    if not self.dilated:
      return x
    extra = Tokens(self.dim, False, "learned", self.dtype, name="dilated_tokens")(
        patchify(dilate(video), self.patch_size, self.frame_patch))
    return jnp.concatenate([x, extra], axis=1)
