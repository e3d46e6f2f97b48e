"""The cross-modal aligner: video windows and current windows in one L2-normalised embedding space.

Each modality's window encoder reuses the pretrain job's per-step extractors (`fmjax.models.encoders`)
and then either the temporal Transformer, mean-pooled ('transformer'), or one dense layer over the
flattened steps ('flat': every position has its own weights, so the embedding says *where* in the
window the current turns steady, at a fraction of a Transformer's cost). A CLIP-style head projects
to `embed_dim` and the result is L2-normalised. The search embeds a current window for every lag, so
the current side defaults to the light 'flat' encoder. The temperature is learned (as its log,
initialised at `init_temperature`) and clipped to [0.01, 1]. `embed(modality, x)` is what the
lead-time search calls (`fmjax.leadtime`; `embed_fn(model)` wraps it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import encoders

TEMPORAL = ("transformer", "flat")


class WindowEncoder(nn.Module):
  """(B, W, ...) raw steps of one modality -> (B, embed_dim), unit length."""
  modality: str
  temporal: str = "transformer"
  dim: int = 128
  step_dim: int = 16        # per-step features of the 'flat' encoder
  embed_dim: int = 64
  depth: int = 2
  heads: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.temporal == "transformer":
      pooled = encoders.SemanticEncoder(self.modality, self.dim, self.depth, self.heads, name="encoder")(x).mean(1)
    elif self.temporal == "flat":
      step = (encoders.VideoStep(self.step_dim, channels=(16, 32), name="step") if self.modality == "video"
              else encoders.CurrentStep(self.step_dim, hidden=2 * self.step_dim, name="step"))
      steps = nn.gelu(step(x))
      pooled = nn.gelu(nn.Dense(self.dim, name="flat")(steps.reshape(steps.shape[0], -1)))
    else:
      raise ValueError(f"temporal={self.temporal!r}; expected one of {TEMPORAL}")
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
  video_temporal: str = "transformer"
  current_temporal: str = "flat"
  step_dim: int = 16
  init_temperature: float = 0.1

  def setup(self):
    kw = dict(dim=self.dim, embed_dim=self.embed_dim, depth=self.depth, heads=self.heads, step_dim=self.step_dim)
    self.encoders = {"video": WindowEncoder("video", self.video_temporal, **kw),
                     "current": WindowEncoder("current", self.current_temporal, **kw)}
    self.log_temperature = self.param("log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ())

  def embed(self, modality: str, x: jax.Array) -> jax.Array:
    return self.encoders[modality](x)

  def temperature(self) -> jax.Array:
    return jnp.clip(jnp.exp(self.log_temperature), 0.01, 1.0)

  def __call__(self, video: jax.Array, current: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    window_shape = current.shape[-3:]
    flat = self.embed("current", current.reshape(-1, *window_shape))
    return self.embed("video", video), flat.reshape(*current.shape[:-3], -1), self.temperature()


def _embed(model: Aligner, variables: dict, modality: str, x: jax.Array) -> jax.Array:
  return model.apply(variables, modality, x, method=Aligner.embed)


def embed_fn(model: Aligner) -> Callable[[dict, str, jax.Array], jax.Array]:
  """The lead-time search's apply-fn `(variables, modality, windows) -> unit embeddings` for `model`.
  It is a static argument of the jitted search: make it once and reuse it, or each call recompiles."""
  return functools.partial(_embed, model)
