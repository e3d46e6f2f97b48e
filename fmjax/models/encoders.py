"""Per-step encoders of Uni-Code: step features for video and current, then a temporal Transformer.

A sequence holds L steps; a step's video is a few low-resolution frames
(F, h, w, 3) in 0..255 and its current 2*step_seconds rows x 3 phases in amperes. Nothing is
pretrained, so each modality has a learned per-step extractor, applied to all B*L steps at once:
video through a small strided ConvNet, current through an MLP over the step's rows. The semantic
encoders follow it with a Transformer over the L steps; the modality-specific ones do not.
Both normalise raw inputs themselves (pixels to [-1, 1]; current around 10 kA in units of 2 kA).
`dtype` is every Dense/Conv layer's compute dtype (e.g. bfloat16; parameters stay float32); the
encoders' and the decoder's outputs are float32 whatever it is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import layers
from fmjax.runtime import errors

Dtype = layers.Dtype

CURRENT_CENTER_A, CURRENT_SCALE_A = 10000.0, 2000.0


def normalize_video(video: jax.Array) -> jax.Array:
  return video.astype(jnp.float32) / 127.5 - 1.0


def normalize_current(current: jax.Array) -> jax.Array:
  return (current.astype(jnp.float32) - CURRENT_CENTER_A) / CURRENT_SCALE_A


FRAMES = ("stack", "mean")


class VideoStep(nn.Module):
  """(B, L, F, h, w, 3) raw frames -> (B, L, dim): the step's frames stacked on channels ('stack') or
  averaged into one ('mean'), strided convs, pooled. Averaging the F frames of a step spread over its
  seconds (`input.frames_per_step`) takes out what changes from frame to frame (sensor noise, glare's
  flicker) and keeps what lasts, at the cost of one frame's convolutions; stacking leaves the first layer
  to learn what to do with them."""
  dim: int
  channels: tuple[int, ...] = (32, 64)
  dtype: Dtype = jnp.float32
  frames: str = "stack"

  @nn.compact
  def __call__(self, video: jax.Array) -> jax.Array:
    if self.frames not in FRAMES:
      raise errors.ConfigError(f"video frames={self.frames!r}; expected one of {FRAMES}")
    x = normalize_video(video)
    if self.frames == "mean":
      x = x.mean(axis=2, keepdims=True)
    b, steps, frames, h, w, c = x.shape
    dtype = layers.compute_dtype(self.dtype)
    x = x.transpose(0, 1, 3, 4, 2, 5).reshape(b * steps, h, w, frames * c)
    for i, width in enumerate(self.channels):
      x = nn.gelu(nn.Conv(width, (3, 3), strides=(2, 2), dtype=dtype, name=f"conv{i}")(x))
    x = jnp.concatenate([x.mean(axis=(1, 2), dtype=jnp.float32), x.max(axis=(1, 2)).astype(jnp.float32)], -1)
    return nn.Dense(self.dim, dtype=dtype, name="out")(x).astype(jnp.float32).reshape(b, steps, self.dim)


class CurrentStep(nn.Module):
  """(B, L, R, 3) raw amperes -> (B, L, dim): an MLP over the step's rows and their differences.

  The differences between consecutive rows carry the fluctuation that marks normal smelting
  (an anomaly makes the current unusually steady). `center` takes each phase relative to
  its mean over the whole input ('window') or over each step's own rows ('step'): the features then
  see the fluctuation but not the recording's level and phase imbalance, which would otherwise let a
  contrastive loss pair video and current by recognising the recording rather than the furnace's
  state. With '' or 'step' every step's features depend on that step alone."""
  dim: int
  hidden: int = 128
  center: str = ""     # '', 'window' or 'step'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, current: jax.Array) -> jax.Array:
    b, steps, rows, phases = current.shape
    x = normalize_current(current)
    if self.center not in ("", "window", "step"):
      raise errors.ConfigError(f"center={self.center!r}; expected '', 'window' or 'step'")
    if self.center:
      x = x - x.mean(axis=(1, 2) if self.center == "window" else 2, keepdims=True)
    x = jnp.concatenate([x.reshape(b, steps, -1), jnp.diff(x, axis=2).reshape(b, steps, -1)], -1)
    dtype = layers.compute_dtype(self.dtype)
    x = nn.gelu(nn.Dense(self.hidden, dtype=dtype, name="hidden")(x))
    return nn.Dense(self.dim, dtype=dtype, name="out")(x).astype(jnp.float32)


class TemporalTransformer(nn.Module):
  """Pre-norm Transformer over the L steps of (B, L, dim) with learned positions."""
  depth: int = 2
  heads: int = 4
  mlp_ratio: int = 2
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # the attention kernel: fmjax.models.attention.IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, steps, dim = x.shape
    dtype = layers.compute_dtype(self.dtype)
    x = x.astype(jnp.float32) + self.param("positions", nn.initializers.normal(0.02), (1, steps, dim))
    for i in range(self.depth):  # the residual stream is float32; the layers' matmuls run in `dtype`
      x = x + layers.SelfAttention(self.heads, dim // self.heads, dtype, self.attention, name=f"layer{i}_attn")(x)
      x = x + layers.FeedForward(self.mlp_ratio * dim, dtype, name=f"layer{i}_mlp")(x)
    return layers.layer_norm(name="norm")(x).astype(jnp.float32)


class SemanticEncoder(nn.Module):
  """Φ_m: per-step features of one modality, in context of the whole sequence -> (B, L, dim)."""
  modality: str       # 'video', 'current', or 'features' (steps that are feature vectors: one Dense layer)
  dim: int = 256
  depth: int = 2
  heads: int = 4
  dtype: Dtype = jnp.float32
  attention: str = "auto"
  video_frames: str = "stack"  # VideoStep.frames

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.modality == "features":  # H-DCID's level 2, on level 1's specific features (fmjax.models.hdcid)
      step = lambda x: _dense_step(self.dim, self.dtype, x)
    elif self.modality == "video":
      step = VideoStep(self.dim, dtype=self.dtype, frames=self.video_frames, name="step")
    else:
      step = CurrentStep(self.dim, dtype=self.dtype, name="step")
    return TemporalTransformer(self.depth, self.heads, dtype=self.dtype, attention=self.attention,
                               name="temporal")(step(x))


class SpecificEncoder(nn.Module):
  """ψ_m: what is particular to one modality, step by step (no temporal context) -> (B, L, dim)."""
  modality: str       # 'video', 'current', or 'features' (steps that are feature vectors: Dense + ReLU)
  dim: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.modality == "video":
      return VideoStep(self.dim, channels=(16, 32), dtype=self.dtype, name="step")(x)
    if self.modality == "features":
      return nn.relu(_dense_step(self.dim, self.dtype, x))
    return CurrentStep(self.dim, hidden=64, dtype=self.dtype, name="step")(x)


def _dense_step(dim: int, dtype: Dtype, x: jax.Array) -> jax.Array:
  """Dense(dim) named 'step' in the calling compact module, float32 out: the step extractor for inputs that are
  already per-step feature vectors."""
  return nn.Dense(dim, dtype=layers.compute_dtype(dtype), name="step")(x).astype(jnp.float32)


class StepDecoder(nn.Module):
  """concat(quantized, specific) (B, L, d) -> the step's normalised input, flattened (B, L, size)."""
  size: int
  hidden: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = layers.compute_dtype(self.dtype)
    hidden = nn.gelu(nn.Dense(self.hidden, dtype=dtype, name="hidden")(x))
    return nn.Dense(self.size, dtype=dtype, name="out")(hidden).astype(jnp.float32)


def reconstruction_target(modality: str, x: jax.Array) -> jax.Array:
  """A step's input as the decoder should give it back: normalised and flattened per step."""
  norm = normalize_video if modality == "video" else normalize_current
  return norm(x).reshape(x.shape[0], x.shape[1], -1)
