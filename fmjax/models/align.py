"""The cross-modal aligner: video windows and current windows in one L2-normalised embedding space.

Each modality's window encoder reuses the pretrain job's per-step extractors (`fmjax.models.encoders`)
and then one of three temporal heads:
* 'steps': one small feature vector per step, centred over the window and flattened, no mixing of
  positions. The cosine of a video and a current window is then a correlation of their per-step
  features at the same positions, so a window pair scores high only when their changes line up in
  time -- which is what a lag search needs.
* 'flat': one dense layer over the flattened steps, then a CLIP-style projection.
* 'transformer': the temporal Transformer, mean-pooled, then the projection.
With `cross_alignment` ('steps' encoders; `configs/align.py:alignvsr`), `cross_align` is AlignVSR's
global alignment, video steps attending over the current's units (`CrossAlignment`). It shapes the
step features in training only: `embed`, hence the lead-time search, is the same function of the same
encoders with or without it.
The current side centres its rows per phase (`encoders.CurrentStep.center`: over each step for
'steps', which keeps every step's features independent of the window; over the window for 'flat'),
so the recording's level and phase imbalance cannot identify it. For 'steps', `embed('current_steps',
history)` gives the per-step features of a whole history, and `lag_search.search(...,
pool_steps=unit_per_step)` cuts the windows from them: one pass of the extractor instead of one per
lag. The temperature is learned (as its log, initialised at `init_temperature`) and clipped to
[0.01, 1]. `embed(modality, x)` is what the lead-time search calls (`fmjax.analysis.lag_search`; `embed_fn(model)`
wraps it). `Model` is the aligner (`config.model_name = 'align'`).

`dtype` (e.g. 'bfloat16') is the compute dtype of every Dense/Conv layer; parameters, the
temperature and the embeddings (cast before they are normalised), hence the similarities and the
contrastive losses, stay float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import encoders, layers
from fmjax.runtime import errors

TEMPORAL = ("transformer", "flat", "steps")


def _unit(x: jax.Array, eps: float) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def unit_per_step(per_step: jax.Array) -> jax.Array:
  """(B, W, k) per-step features -> (B, W * k): centred over the window (a correlation, not a level), unit length."""
  centred = per_step - per_step.mean(axis=1, keepdims=True)
  return _unit(centred.reshape(centred.shape[0], -1), 1e-6)


class CentredDense(nn.Module):
  """nn.Dense (same parameters, same numbers) whose bias is not trained, for features that are centred
  over the window afterwards (`unit_per_step`): the centring cancels any bias, so its gradient is zero
  up to rounding noise, which Adam would turn into steps of about the learning rate that differ with
  the device layout. Kept as a parameter so that checkpoints keep their layout."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = jax.lax.stop_gradient(self.param("bias", nn.initializers.zeros_init(), (self.features,)))
    x, kernel, bias = (v.astype(self.dtype) for v in (x, kernel, bias))
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias


class WindowEncoder(nn.Module):
  """(B, W, ...) raw steps of one modality -> unit-length (B, embed_dim), or (B, W * step_dim) for 'steps'."""
  modality: str
  temporal: str = "transformer"
  dim: int = 128
  step_dim: int = 16        # per-step features of 'flat' and 'steps'
  embed_dim: int = 64
  depth: int = 2
  heads: int = 4
  dtype: Any = jnp.float32  # Dense/Conv compute dtype; the outputs are float32
  attention: str = "auto"   # the attention kernel: fmjax.models.attention.IMPLEMENTATIONS
  video_frames: str = "stack"  # a video step's frames stacked or averaged (encoders.VideoStep.frames)

  def _step(self, center: str) -> nn.Module:
    if self.modality == "video":
      return encoders.VideoStep(self.step_dim, channels=(16, 32), dtype=self.dtype, frames=self.video_frames,
                                name="step")
    return encoders.CurrentStep(self.step_dim, hidden=2 * self.step_dim, center=center, dtype=self.dtype, name="step")

  def _dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=layers.compute_dtype(self.dtype), name=name)

  @nn.compact
  def step_features(self, x: jax.Array) -> jax.Array:
    """'steps' only: (B, T, ...) -> (B, T, step_dim), each step's features from that step alone."""
    per_step = CentredDense(self.step_dim, layers.compute_dtype(self.dtype), name="per_step")
    return per_step(nn.gelu(self._step(center="step")(x))).astype(jnp.float32)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.temporal == "transformer":
      pooled = encoders.SemanticEncoder(self.modality, self.dim, self.depth, self.heads, dtype=self.dtype,
                                        attention=self.attention, video_frames=self.video_frames,
                                        name="encoder")(x).mean(1)
    elif self.temporal == "flat":
      steps = nn.gelu(self._step(center="window")(x))
      pooled = nn.gelu(self._dense(self.dim, "flat")(steps.reshape(steps.shape[0], -1)))
    elif self.temporal == "steps":
      return unit_per_step(self.step_features(x))
    else:
      raise errors.ConfigError(f"temporal={self.temporal!r}; expected one of {TEMPORAL}")
    projected = self._dense(self.embed_dim, "proj_out")(nn.gelu(self._dense(self.dim, "proj_hidden")(pooled)))
    return _unit(projected.astype(jnp.float32), 1e-12)


class CrossAlignment(nn.Module):
  """AlignVSR's global alignment (`configs/align.py:alignvsr`): the video steps, as queries with their
  positions, attend over the current's units (its per-step features) as keys and values; one head.

  (B, W, k) video step features and (B, T, k) current units -> the attention (B, W, T) and the attended
  units (B, W, k). AlignVSR's queries are the video frames after its encoder (with relative positions)
  and its keys and values a frozen bank of 200 k-means audio units; the furnace has no unit bank,
  so each step of the current history is a unit, and only the video side carries positions (learned,
  one per window step): which unit a step attends to is what the local term checks.

  The scores are cosines over a learned temperature (initialised at `init_temperature`, clipped to
  [0.01, 1]), not dot products over sqrt(dim): the step features' scale is free (every window embedding
  is normalised, `unit_per_step`) and stays small in training, and scaled dot products of such features
  left the attention uniform, with the local term stuck at its uniform value on the tiny furnace.
  """
  dim: int = 16
  init_temperature: float = 0.1

  @nn.compact
  def __call__(self, video_steps: jax.Array, units: jax.Array) -> tuple[jax.Array, jax.Array]:
    window, k = video_steps.shape[1:]
    positions = self.param("positions", nn.initializers.normal(0.02), (window, k))
    log_temperature = self.param("log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ())
    query = _unit(nn.Dense(self.dim, name="query")(video_steps + positions), 1e-6)
    key = _unit(nn.Dense(self.dim, name="key")(units), 1e-6)
    value = nn.Dense(k, name="value")(units)
    temperature = jnp.clip(jnp.exp(log_temperature), 0.01, 1.0)
    attention = jax.nn.softmax(jnp.einsum("bwd,btd->bwt", query, key) / temperature, axis=-1)
    return attention, jnp.einsum("bwt,btk->bwk", attention, value)


class Aligner(layers.NamedComputeDtype):
  """`__call__(video=, current=)` -> (video embeddings (B, e), current embeddings (..., e), temperature).

  `current` may carry extra leading axes after the batch (e.g. (B, P, W, R, 3): P candidate lags per
  sample); they are flattened for the encoder and restored.
  """
  dim: int = 128
  embed_dim: int = 64
  depth: int = 2
  heads: int = 4
  video_temporal: str = "transformer"
  current_temporal: str = "flat"
  step_dim: int = 16
  init_temperature: float = 0.1
  dtype: Any = jnp.float32  # compute dtype of the matmuls (a dtype or its name, e.g. 'bfloat16')
  attention: str = "auto"   # the attention kernel: fmjax.models.attention.IMPLEMENTATIONS
  cross_alignment: bool = False  # AlignVSR's global cross-attention, for training only (`cross_align`)
  video_frames: str = "stack"    # a video step's frames stacked or averaged (encoders.VideoStep.frames)

  def setup(self):
    kw = dict(dim=self.dim, embed_dim=self.embed_dim, depth=self.depth, heads=self.heads, step_dim=self.step_dim,
              dtype=layers.compute_dtype(self.dtype), attention=self.attention)
    self.encoders = {"video": WindowEncoder("video", self.video_temporal, video_frames=self.video_frames, **kw),
                     "current": WindowEncoder("current", self.current_temporal, **kw)}
    self.log_temperature = self.param("log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ())
    if self.cross_alignment:
      if (self.video_temporal, self.current_temporal) != ("steps", "steps"):
        raise errors.ConfigError(f"model.cross_alignment needs video_temporal='steps' and current_temporal='steps', "
                                 f"not {self.video_temporal!r} and {self.current_temporal!r}")
      self.cross = CrossAlignment(self.step_dim)

  def embed(self, modality: str, x: jax.Array) -> jax.Array:
    """Unit embeddings of windows of 'video' or 'current'; or, for 'current_steps' and 'video_steps'
    (the 'steps' encoders only), the per-step features (B, T, step_dim) of whole sequences."""
    if modality.endswith("_steps"):
      encoder = modality.removesuffix("_steps")
      temporal = self.current_temporal if encoder == "current" else self.video_temporal
      if temporal != "steps":
        raise errors.ConfigError(f"{modality!r} needs {encoder}_temporal='steps', not {temporal!r}")
      return self.encoders[encoder].step_features(x)
    return self.encoders[modality](x)

  def cross_align(self, video_steps: jax.Array, units: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`CrossAlignment` of video step features over current units (model.cross_alignment only)."""
    return self.cross(video_steps, units)

  def temperature(self) -> jax.Array:
    return jnp.clip(jnp.exp(self.log_temperature), 0.01, 1.0)

  def __call__(self, video: jax.Array | None = None,
               current: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    missing = [name for name, value in (("video", video), ("current", current)) if value is None]
    if missing:
      raise errors.ConfigError(f"the aligner embeds both modalities: it needs video= and current=; "
                               f"missing: {', '.join(missing)}")
    window_shape = current.shape[-3:]
    flat = self.embed("current", current.reshape(-1, *window_shape))
    if self.cross_alignment and self.is_initializing():  # its parameters: each sample's windows' steps as units
      units = self.embed("current_steps", current.reshape(current.shape[0], -1, *window_shape[1:]))
      self.cross_align(self.embed("video_steps", video), units)
    return self.embed("video", video), flat.reshape(*current.shape[:-3], -1), self.temperature()


Model = Aligner  # what `fmjax.runtime.registry.find('align', 'Model')` gives


def _embed(model: nn.Module, variables: dict, modality: str, x: jax.Array) -> jax.Array:
  return model.apply(variables, modality, x, method="embed")


def embed_fn(model: nn.Module) -> Callable[[dict, str, jax.Array], jax.Array]:
  """The lead-time search's apply-fn `(variables, modality, windows) -> unit embeddings` for `model`.
  It is a static argument of the jitted search: make it once and reuse it, or each call recompiles."""
  return functools.partial(_embed, model)
