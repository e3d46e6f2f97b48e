"""FmFormer anomaly detection as a training task: model, batches, loss and evaluation.

`config.model.kind` picks the cross-modal model ('cross'), the video-only ('video') or the
current-only ('current') baseline; `config.model.task` 'classification' (one label per clip) or
'segmentation' (the last frame's mask). The loop (fmjax.train.loop) owns devices, optimiser,
checkpoints and logging; this module only knows what a clip is and what the model should say.
"""

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from fmjax import errors, metrics
from fmjax.data import pipeline, tfds_fmf
from fmjax.models import fmformer

KINDS = ("cross", "video", "current")
_MODEL_FIELDS = {"cross": ("image_size", "patch_size", "frame_patch", "dim", "depth", "heads", "head_dim",
                           "mlp_dim", "num_classes", "task", "dilated", "pool"),
                 "current": ("dim", "depth", "heads", "head_dim", "mlp_dim", "num_classes", "pool")}
_MODEL_FIELDS["video"] = _MODEL_FIELDS["cross"] + ("positions",)


def build_model(config: ml_collections.ConfigDict, bn_axis_name: str | None = None) -> nn.Module:
  """The model named by `config.model`, with clip geometry taken from `config.input`."""
  m = config.model
  if m.kind not in KINDS:
    raise errors.ConfigError(f"model.kind={m.kind!r} is not one of {KINDS}")
  if m.kind == "current" and m.task != "classification":
    raise errors.ConfigError("model.task='segmentation' needs video: use model.kind 'cross' or 'video'")
  fields = {k: m[k] for k in _MODEL_FIELDS[m.kind]}
  fields["dtype"] = jnp.dtype(m.dtype)
  if m.kind != "current":
    fields.update(frames=config.input.num_frames, bn_axis_name=bn_axis_name)
  if m.kind != "video":
    fields.update(current_len=2 * config.input.current_seconds)
  cls = {"cross": fmformer.FmFormer, "video": fmformer.VideoFormer, "current": fmformer.CurrentFormer}[m.kind]
  return cls(**fields)


class FmFormerTask:
  """Everything job-specific about training and evaluating an FmFormer model."""

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf | None = None):
    self.config = config
    self.data = data or tfds_fmf.load_from_config(config.data)
    self.model = build_model(config, bn_axis_name="data")
    self.segmentation = config.model.task == "segmentation"
    self.keeps_all_predictions = not self.segmentation  # per-clip classes feed the heavy-mist accuracy
    self.kind = config.model.kind
    height, width = self.data.recordings[0].image_shape
    if self.kind != "current" and not height == width == config.model.image_size:
      raise errors.ConfigError(f"model.image_size={config.model.image_size} but the data's frames are {height}x{width}:"
                               f" set --config.model.image_size={height} (square frames only)")
    self.window = dict(num_frames=config.input.num_frames, sampling_rate=config.input.sampling_rate,
                       current_seconds=config.input.current_seconds, official_layout=config.input.official_layout)

  # ------------------------------------------------------------------------------ batches

  def _dataset(self, split_frames: np.ndarray, batch: int, **kwargs):
    return pipeline.make_dataset(self.data.recordings, split_frames, kind="clip", batch_size=batch,
                                 window=self.window, worker_count=self.config.input.worker_count, **kwargs)

  def _device_fields(self, batch: dict) -> dict:
    keep = {"label": batch["label"].astype(np.int32)}
    if self.kind != "current":
      keep["video"] = batch["video"]
    if self.kind != "video":
      keep["current"] = batch["current"]
    if self.segmentation:
      keep["mask"] = batch["mask"].astype(np.int32)
    return keep

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    dataset = self._dataset(self.data.split("train"), host_batch, seed=seed, start_batch=start_step)
    return map(self._device_fields, dataset)

  def eval_frames(self, split: str) -> np.ndarray:
    frames = self.data.split(split)[::self.config.eval.stride]
    return frames[:self.config.eval.max_clips] if self.config.eval.max_clips else frames

  def eval_batches(self, split: str, host_batch: int) -> Iterator[tuple[dict, dict]]:
    """(device fields padded to `host_batch` with `valid`, host keys) over the whole split, in order."""
    dataset = self._dataset(self.eval_frames(split), host_batch, shuffle=False, num_epochs=1, drop_remainder=False)
    for batch in dataset:
      n = len(batch["label"])
      fields = {k: _pad(v, host_batch) for k, v in self._device_fields(batch).items()}
      fields["valid"] = np.arange(host_batch) < n
      yield fields, {"recording": batch["recording"], "frame": batch["frame"]}

  # ------------------------------------------------------------------------------ model

  def inputs(self, batch: dict) -> tuple:
    return {"cross": (batch.get("video"), batch.get("current")), "video": (batch.get("video"),),
            "current": (batch.get("current"),)}[self.kind]

  def init(self, rng: jax.Array, batch: dict) -> dict:
    return self.model.init(rng, *self.inputs(batch))

  def loss(self, params, model_state: dict, batch: dict, rng: jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
    """Mean cross-entropy of this device's shard (per clip, or per pixel for segmentation)."""
    variables = {"params": params, **model_state}
    logits, new_state = self.model.apply(variables, *self.inputs(batch), train=True, mutable=list(model_state))
    target = batch["mask"] if self.segmentation else batch["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), target).mean()
    accuracy = (logits.argmax(-1) == target).mean()
    return loss, ({"loss": loss, "accuracy": accuracy}, dict(new_state))

  def predict(self, variables: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(predictions, confusion of the valid entries) for this device's shard."""
    logits = self.model.apply(variables, *self.inputs(batch), train=False)
    predictions = logits.argmax(-1)
    target = batch["mask"] if self.segmentation else batch["label"]
    valid = jnp.broadcast_to(batch["valid"].reshape((-1,) + (1,) * (target.ndim - 1)), target.shape)
    return predictions.astype(jnp.int8), metrics.confusion_matrix(predictions, target, valid=valid)

  # ------------------------------------------------------------------------------ results

  def summarize(self, confusion: np.ndarray, predictions: np.ndarray, keys: dict) -> dict[str, Any]:
    """Official metrics; on the synthetic furnace also the accuracy on heavy-mist clips."""
    summary = dict(metrics.classification_metrics(confusion))
    if self.segmentation:
      summary.update(metrics.segmentation_metrics(confusion))
      return summary
    position = self.data.index["offsets"][keys["recording"]] + keys["frame"]
    labels = self.data.index["labels"][position]
    if "mist" in self.data.index:  # the synthetic furnace's truth
      heavy = self.data.index["mist"][position] >= self.config.eval.heavy_mist
      summary["clips_heavy_mist"] = int(heavy.sum())
      if heavy.any():
        summary["acc_heavy_mist"] = float((predictions[heavy] == labels[heavy]).mean())
    return summary

  def add_report_sections(self, page, summary: dict, samples: dict) -> None:
    """Confusion matrix; for segmentation, predicted vs true masks of the first test clips."""
    level = "pixel" if self.segmentation else "clip"
    page.add_confusion(f"Confusion matrix ({level} level, test split)", samples["confusion"])
    first = samples.get("first")
    if self.segmentation and first is not None:
      count = min(6, int(first["valid"].sum()))
      predicted = samples["predictions"][:count]
      frames = first["video"][:count, -1] if "video" in first else None
      page.add_masks("Predicted vs true masks (last frame of the first test clips)", predicted,
                     first["mask"][:count], frames)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)]) if len(x) < size else x
