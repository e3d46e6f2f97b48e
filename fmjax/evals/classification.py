"""FmFormer's evaluation: the benchmark's metrics on a split, clip or pixel level, and inference speed.

Settings (`config.evals.<name>`): `split`; `batch_size` (global); every `stride`-th clip, then at
most `max_clips` of those spread evenly over the split (0: all); `heavy_mist`, the mist level from
which the synthetic furnace's clips count as heavy-mist (their accuracy is reported apart).

The official protocol evaluates every clip of the test split: 81,000 on the pixel-level release, about
an hour on 2 CPU cores. On a CPU, `stride=25` (one clip per second of 25-fps video) or `max_clips`
evaluates an evenly spread subset; the summary's `eval_clips` says how many clips a figure rests on.
It uses the job's `logits` predict function and cuts its clips with the job's `inputs` (clip geometry,
the model's input fields, the target: `label`, or `mask` for segmentation).
"""

import functools
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import metrics
from fmjax.data import pipeline
from fmjax.evals.base import Context, Evaluation
from fmjax.runtime import console, errors
from fmjax.runtime.parallel import AXIS, REPLICATED, SHARDED


class Evaluator:
  """Confusion matrix and official metrics over the split; per-clip predictions where they fit in memory."""
  predict_fns = ("logits",)

  def __init__(self, context: Context, *, split: str, batch_size: int, stride: int, max_clips: int,
               heavy_mist: float):
    self.context, self.split, self.batch_size = context, split, batch_size
    self.stride, self.max_clips, self.heavy_mist = stride, max_clips, heavy_mist
    self.logits = context.predict_fns["logits"]
    self.target = context.inputs["target"]
    self.segmentation = self.target == "mask"
    self.keeps_all_predictions = not self.segmentation  # masks of a whole test split would not fit in memory

  def samples(self) -> np.ndarray:
    samples = self.context.data.split(self.split)[::self.stride]
    if self.max_clips and len(samples) > self.max_clips:
      samples = samples[np.linspace(0, len(samples) - 1, self.max_clips).round().astype(int)]
    return samples

  def batches(self, host_batch: int) -> Iterator[tuple[dict, dict]]:
    """(device fields with `valid`, host keys) of this host's blocks of the split's global batches, in
    order; padded to whole global batches, so every host runs the same number of batches."""
    inputs = self.context.inputs
    dataset = pipeline.make_dataset(self.context.data.recordings, self.samples(), sample_kind="clip",
                                    batch_size=host_batch, sample_spec=inputs["spec"],
                                    worker_count=inputs["worker_count"], shuffle=False, num_epochs=1,
                                    drop_remainder=False, pad=True)
    for batch in dataset:
      fields = {name: batch[name] for name in inputs["fields"]}
      fields[self.target] = batch[self.target].astype(np.int32)
      yield ({**fields, "valid": batch["valid"]}, {"recording": batch["recording"], "frame": batch["frame"]})

  def _predict(self, variables: dict, batch: dict):
    """(predictions, confusion of the valid entries summed over the devices) of this device's shard."""
    predictions = self.logits(variables, batch).argmax(-1)
    target = batch[self.target]
    valid = jnp.broadcast_to(batch["valid"].reshape((-1,) + (1,) * (target.ndim - 1)), target.shape)
    return predictions.astype(jnp.int8), jax.lax.psum(metrics.confusion_matrix(predictions, target, valid=valid),
                                                      AXIS)

  def run(self, par, variables, shared) -> Evaluation:
    """The split once across all processes: predictions gathered with their keys (every process gets
    the same figures)."""
    del shared
    par.check_batch_size(self.batch_size)
    predict = par.wrap(self._predict, (REPLICATED, SHARDED), (SHARDED, REPLICATED))
    host_keys, first = [], {}
    def fields():
      for device_fields, keys in self.batches(self.batch_size // jax.process_count()):
        host_keys.append(keys)
        first.setdefault("batch", device_fields)
        yield device_fields

    confusion, predictions, keys, clips, count, timed_from = 0, [], [], 0, 0, None
    total = -(-len(self.samples()) // self.batch_size)
    progress = console.Progress(total, phase=f"evaluating: {self.split}", unit="batch")
    for n, batch in enumerate(par.batches(fields())):
      preds, batch_confusion = par.to_host(predict(variables, batch), (SHARDED, REPLICATED))
      progress.finished(n + 1)
      confusion = confusion + batch_confusion
      valid = par.to_host(batch["valid"], SHARDED)
      count += int(valid.sum())
      if n == 0 or self.keeps_all_predictions:
        predictions.append(preds[valid])
        keys.append({k: v[valid] for k, v in par.gather(host_keys[n]).items()})
      if n == 0:  # the first batch pays for compilation: time the rest
        timed_from = time.time()
      else:
        clips += int(valid.sum())
    progress.close()
    if not host_keys:
      raise errors.ConfigError(f"the {self.split!r} split is empty: nothing to evaluate")
    elapsed = time.time() - timed_from
    confusion, predictions = np.asarray(confusion), np.concatenate(predictions)
    keys = {k: np.concatenate([part[k] for part in keys]) for k in keys[0]}
    summary = self.summarize(confusion, predictions, keys)
    summary["fps"] = clips / elapsed if clips else None  # one batch only: its time is mostly compilation
    summary["eval_clips"] = count
    return Evaluation(summary, functools.partial(self.add_sections, confusion, predictions, first.get("batch")))

  def summarize(self, confusion: np.ndarray, predictions: np.ndarray, keys: dict) -> dict[str, Any]:
    """Official metrics; on the synthetic furnace also the accuracy on heavy-mist clips."""
    summary = dict(metrics.classification_metrics(confusion))
    if self.segmentation:
      summary.update(metrics.segmentation_metrics(confusion))
      return summary
    index = self.context.data.index
    position = index["offsets"][keys["recording"]] + keys["frame"]
    labels = index["labels"][position]
    if "mist" in index:  # the synthetic furnace's truth
      heavy = index["mist"][position] >= self.heavy_mist
      summary["clips_heavy_mist"] = int(heavy.sum())
      if heavy.any():
        summary["acc_heavy_mist"] = float((predictions[heavy] == labels[heavy]).mean())
    return summary

  def add_sections(self, confusion: np.ndarray, predictions: np.ndarray, first: dict | None, page) -> None:
    """Confusion matrix; for segmentation, predicted vs true masks of the first clips."""
    level = "pixel" if self.segmentation else "clip"
    page.add_confusion(f"Confusion matrix ({level} level, {self.split} split)", confusion)
    if self.segmentation and first is not None:
      count = min(6, int(first["valid"].sum()))
      frames = first["video"][:count, -1] if "video" in first else None
      page.add_masks(f"Predicted vs true masks (last frame of the first {self.split} clips)", predictions[:count],
                     first["mask"][:count], frames)
