"""FmFormer (cross-modal video + current transformer) and its video-only and current-only variants.

    model = fmformer.Model(variant="current", dim=96, image_size=64, ...)  # one flat dict for any variant
    logits = model.apply(variables, video=video, current=current)         # each model takes what it needs

Defaults are the official hyper-parameters (dim 96, depth 6, 3 heads of 32, MLP 384, 64x64 clips
of 10 frames in 8x8x2 tubes, 240 current rows). Inputs are raw, by name: video (B, T, H, W, 3) in
0..255, current (B, S, 3) in amperes; a model ignores the ones not in its `inputs`. Outputs:
(B, num_classes) logits, or (B, H, W, num_classes) for segmentation. `bn_axis_name` names the device
axis over which the segmentation head's BatchNorm averages batch statistics in training
(synchronised BatchNorm, so N devices equal one device).
"""

import dataclasses
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from fmjax.models import layers, tokenizers
from fmjax.runtime import errors

TASKS = ("classification", "segmentation")
POOLS = ("cls", "mean")
VARIANTS = ("cross", "video", "current")


def _pool(tokens: jax.Array, pool: str) -> jax.Array:
  return tokens.mean(axis=1) if pool == "mean" else tokens[:, 0]


def _check_choices(task: str, pool: str) -> None:
  if task not in TASKS:
    raise errors.ConfigError(f"task={task!r} is not one of {TASKS}")
  if pool not in POOLS:
    raise errors.ConfigError(f"pool={pool!r} is not one of {POOLS}")


class NormDense(nn.Module):
  """LayerNorm then Dense: one classification head of a pooled token."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, name="dense")(layers.layer_norm("norm")(x))


class SegmentationHead(nn.Module):
  """Video tokens (cls first) -> per-pixel logits at the clip's resolution (8x the token grid)."""
  time_steps: int
  grid: int
  num_classes: int
  dilated: bool
  hidden: tuple[int, ...] = (128, 64, 32)
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  def _token_map(self, tokens: jax.Array, grid: int, name: str) -> jax.Array:
    """b (t h w) c -> b h w (t c), then a 1x1 conv back to the model width."""
    b, _, c = tokens.shape
    x = tokens.reshape(b, self.time_steps, grid, grid, c).transpose(0, 2, 3, 1, 4)
    x = x.reshape(b, grid, grid, self.time_steps * c)
    return nn.Conv(c, (1, 1), dtype=self.dtype, name=name)(x)

  def _up(self, x: jax.Array, features: int, name: str, train: bool) -> jax.Array:
    x = layers.Upsample2x(features, self.dtype, name=f"{name}_up")(x)
    return layers.ResidualConvUnit(self.bn_axis_name, self.dtype, name=f"{name}_refine")(x, train)

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    tokens = tokens[:, 1:]
    count = self.time_steps * self.grid * self.grid
    x = self._token_map(tokens[:, :count], self.grid, "tokens_proj")
    if self.dilated:
      extra = self._token_map(tokens[:, count:], self.grid // 2, "dilated_proj")
      x = x + self._up(extra, x.shape[-1], "dilated", train)
    for i, features in enumerate(self.hidden):
      x = self._up(x, features, f"decode{i + 1}", train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="out")(x).astype(jnp.float32)  # logits f32


class _Transformer(nn.Module):
  """The transformer and head hyper-parameters every variant shares."""
  inputs: ClassVar[tuple[str, ...]] = ()  # the inputs `__call__` needs, by keyword name
  dim: int = 96
  depth: int = 6
  heads: int = 3
  head_dim: int = 32
  mlp_dim: int = 384
  num_classes: int = 2
  pool: str = "cls"
  dtype: Any = jnp.float32
  attention: str = "auto"  # the attention kernel: fmjax.models.attention.IMPLEMENTATIONS

  def example_shape(self, name: str) -> tuple[int, ...]:
    """The shape of one example of input `name` (one of `inputs`): video (T, H, W, C), current (S, C)."""
    if name not in self.inputs:
      raise errors.ConfigError(f"{type(self).__name__} takes no {name}=; its inputs are {self.inputs}")
    if name == "video":
      return (self.frames, self.image_size, self.image_size, self.channels)
    return (self.current_len, self.current_dim)

  def check_input(self, name: str, x: jax.Array | None, batch: int | None = None) -> None:
    """A ConfigError if input `name` was not given; an AssertionError if its shape is wrong."""
    shape = self.example_shape(name)
    if x is None:
      raise errors.ConfigError(f"{type(self).__name__} needs {name}= (B, {', '.join(map(str, shape))}); got none")
    chex.assert_shape(x, (batch, *shape))


class _VideoModel(_Transformer):
  """Fields and helpers shared by the two models that see video."""
  image_size: int = 64
  patch_size: int = 8
  frames: int = 10
  frame_patch: int = 2
  channels: int = 3
  task: str = "classification"
  dilated: bool = True
  bn_axis_name: str | None = None

  def __post_init__(self):
    tokenizers.check_video_geometry(self.image_size, self.patch_size, self.frames, self.frame_patch)
    _check_choices(self.task, self.pool)
    if self.task == "segmentation" and self.dilated and (self.image_size // self.patch_size) % 2:
      raise errors.ConfigError(f"dilated segmentation needs an even token grid; image_size={self.image_size}"
                               f" / patch_size={self.patch_size} is odd")
    super().__post_init__()

  def video_tokens(self, video: jax.Array, positions: str = "learned") -> jax.Array:
    return tokenizers.VideoTokens(self.dim, self.patch_size, self.frame_patch, self.dilated, positions,
                                  self.dtype, name="video")(video.astype(jnp.float32))

  def segmentation_head(self) -> SegmentationHead:
    return SegmentationHead(self.frames // self.frame_patch, self.image_size // self.patch_size,
                            self.num_classes, self.dilated, bn_axis_name=self.bn_axis_name,
                            dtype=self.dtype, name="head")


class FmFormer(_VideoModel):
  """Cross-modal FmFormer: per-stream self-attention, bidirectional cross-attention, per-stream MLP."""
  inputs: ClassVar[tuple[str, ...]] = ("video", "current")
  current_len: int = 240
  current_dim: int = 3

  @nn.compact
  def __call__(self, video: jax.Array | None = None, current: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    self.check_input("video", video)
    self.check_input("current", current, batch=video.shape[0])
    v = self.video_tokens(video)
    c = tokenizers.Tokens(self.dim, True, "learned", self.dtype, name="current")(current.astype(jnp.float32))
    attention = dict(dtype=self.dtype, attention=self.attention)
    for i in range(self.depth):
      v = v + layers.SelfAttention(self.heads, self.head_dim, **attention, name=f"layer{i}_video_attn")(v)
      c = c + layers.SelfAttention(self.heads, self.head_dim, **attention, name=f"layer{i}_current_attn")(c)
      dv, dc = layers.CrossAttention(self.heads, self.head_dim, **attention, name=f"layer{i}_cross_attn")(v, c)
      v, c = v + dv, c + dc
      v = v + layers.FeedForward(self.mlp_dim, self.dtype, name=f"layer{i}_video_mlp")(v)
      c = c + layers.FeedForward(self.mlp_dim, self.dtype, name=f"layer{i}_current_mlp")(c)
    if self.task == "segmentation":
      return self.segmentation_head()(v, train)
    return (NormDense(self.num_classes, name="video_head")(_pool(v, self.pool))
            + NormDense(self.num_classes, name="current_head")(_pool(c, self.pool)))


def _encoder(x: jax.Array, depth: int, heads: int, head_dim: int, mlp_dim: int, dtype: Any, attention: str
             ) -> jax.Array:
  """A plain pre-norm transformer stack; submodules are named layer{i}_attn / layer{i}_mlp."""
  for i in range(depth):
    x = x + layers.SelfAttention(heads, head_dim, dtype, attention, name=f"layer{i}_attn")(x)
    x = x + layers.FeedForward(mlp_dim, dtype, name=f"layer{i}_mlp")(x)
  return x


class VideoFormer(_VideoModel):
  """Video-only baseline. `positions` 'learned' (official default) or 'sinusoid' (official 'tri')."""
  inputs: ClassVar[tuple[str, ...]] = ("video",)
  positions: str = "learned"

  @nn.compact
  def __call__(self, video: jax.Array | None = None, current: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    del current  # not an input of this model
    self.check_input("video", video)
    x = self.video_tokens(video, self.positions)
    x = _encoder(x, self.depth, self.heads, self.head_dim, self.mlp_dim, self.dtype, self.attention)
    if self.task == "segmentation":
      return self.segmentation_head()(x, train)
    return NormDense(self.num_classes, name="video_head")(_pool(x, self.pool))


class CurrentFormer(_Transformer):
  """Current-only baseline: transformer with a final LayerNorm and a plain linear head."""
  inputs: ClassVar[tuple[str, ...]] = ("current",)
  current_len: int = 240
  current_dim: int = 3

  def __post_init__(self):
    _check_choices("classification", self.pool)
    super().__post_init__()

  @nn.compact
  def __call__(self, current: jax.Array | None = None, video: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    del video, train  # not an input of this model; no dropout or BatchNorm in it
    self.check_input("current", current)
    x = tokenizers.Tokens(self.dim, True, "learned", self.dtype, name="current")(current.astype(jnp.float32))
    x = _encoder(x, self.depth, self.heads, self.head_dim, self.mlp_dim, self.dtype, self.attention)
    x = layers.layer_norm("final_norm")(x)
    return nn.Dense(self.num_classes, name="head")(_pool(x, self.pool))


_CLASSES = dict(zip(VARIANTS, (FmFormer, VideoFormer, CurrentFormer)))


def _fields(cls: type[nn.Module]) -> set[str]:
  return {f.name for f in dataclasses.fields(cls) if f.init and f.name != "parent"}


def Model(variant: str = "cross", **fields) -> nn.Module:  # a constructor
  """The model of `variant` ('cross', 'video' or 'current') from one flat dict of fields for any variant.

  Each class gets the fields it declares and ignores the others (a current-only model has no
  image_size); a field no variant has is an error. `dtype` may be a name such as 'bfloat16'.
  """
  if variant not in _CLASSES:
    raise errors.ConfigError(f"model variant={variant!r} is not one of {VARIANTS}")
  known = set().union(*map(_fields, _CLASSES.values()))
  unknown = sorted(set(fields) - known)
  if unknown:
    raise errors.ConfigError(f"no model variant has the field {', '.join(map(repr, unknown))};"
                             f" the fields are {', '.join(sorted(known))}")
  if fields.get("task", "classification") not in TASKS:
    raise errors.ConfigError(f"task={fields['task']!r} is not one of {TASKS}")
  if variant == "current" and fields.get("task") == "segmentation":
    raise errors.ConfigError("task='segmentation' needs video: use model variant 'cross' or 'video'")
  if "dtype" in fields:
    fields["dtype"] = layers.compute_dtype(fields["dtype"])
  cls = _CLASSES[variant]
  return cls(**{k: v for k, v in fields.items() if k in _fields(cls)})
