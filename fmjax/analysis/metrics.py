"""The official FMF-Benchmark metrics: clip-level binary classification and pixel-level segmentation.

Everything is derived from one confusion matrix (rows = label, columns = prediction) so that
evaluation is a jitted, shardable count (`confusion_matrix`, summed over batches and devices) followed
by a few host-side divisions (`classification_metrics`, `segmentation_metrics`). Class 1 (abnormal) is
the positive class.

Ratios whose denominator is zero (no positives, no predictions, an empty matrix) are defined as 0.0:
no epsilons, so every non-degenerate value is exact.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames="num_classes")
def confusion_matrix(predictions: Any, labels: Any, num_classes: int = 2, valid: Any = None) -> jax.Array:
  """Counts of (label, prediction) pairs: int32 (num_classes, num_classes), rows = label.

  `predictions` and `labels` are integer class ids of any one shape: clips (B,) or masks (B, H, W).
  `valid` (optional, boolean, same shape) drops entries that are False, e.g. the padding of the last
  eval batch. Entries whose label or prediction lies outside [0, num_classes) are dropped too, so an
  ignore label such as -1 never lands in a cell. One scatter-add, no loop over samples; jitted itself
  (one compile per shape when called eagerly on the host) and inlined when called inside a jitted step.
  Counts are int32 per call; accumulate across batches on the host in int64 for large pixel totals.
  """
  predictions = jnp.asarray(predictions)
  labels = jnp.asarray(labels)
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
  if valid is not None and jnp.shape(valid) != labels.shape:
    raise ValueError(f"valid mask {jnp.shape(valid)} and labels {labels.shape} differ in shape")
  predictions, labels = predictions.astype(jnp.int32).ravel(), labels.astype(jnp.int32).ravel()
  keep = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
  if valid is not None:
    keep = keep & jnp.asarray(valid).astype(bool).ravel()
  cell = jnp.where(keep, labels * num_classes + predictions, 0)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[cell].add(keep.astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def _ratio(numerator: float, denominator: float) -> float:
  """numerator / denominator, with 0/0 (or x/0) defined as 0.0."""
  return float(numerator) / float(denominator) if denominator else 0.0


def _host_matrix(confusion: Any) -> np.ndarray:
  """The confusion matrix as a square int64 numpy array (counts may exceed int32 after summing)."""
  c = np.asarray(confusion).astype(np.int64)
  if c.ndim != 2 or c.shape[0] != c.shape[1]:
    raise ValueError(f"a confusion matrix must be square, got shape {c.shape}")
  return c


def classification_metrics(confusion: Any) -> dict[str, float]:
  """The official clip-level metrics of a 2x2 confusion matrix (rows = label, class 1 = positive).

  acc = (TP+TN)/N, precision = TP/(TP+FP), recall = TP/(TP+FN), f1 = 2PR/(P+R),
  fdr = FP/(FP+TN) (false detection rate), mdr = FN/(TP+FN) (missed detection rate), and
  bacc = (recall + TN/(TN+FP)) / 2 (balanced accuracy: 0.5 for any constant prediction).
  A zero denominator gives 0.0 (e.g. precision when nothing is predicted abnormal).
  """
  c = _host_matrix(confusion)
  if c.shape != (2, 2):
    raise ValueError(f"classification metrics need a 2x2 confusion matrix, got shape {c.shape}")
  (tn, fp), (fn, tp) = c
  precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
  return {
      "acc": _ratio(tp + tn, c.sum()),
      "precision": precision,
      "recall": recall,
      "f1": _ratio(2 * precision * recall, precision + recall),
      "fdr": _ratio(fp, fp + tn),
      "mdr": _ratio(fn, tp + fn),
      "bacc": (recall + _ratio(tn, tn + fp)) / 2,
  }


def segmentation_metrics(confusion: Any) -> dict[str, float]:
  """Pixel-level metrics of a (K, K) confusion matrix: miou, pixel_acc and iou_0 ... iou_{K-1}.

  iou_k = TP/(TP+FP+FN) of class k. A class absent from both labels and predictions (TP+FP+FN = 0)
  reports iou_k = 0.0 but is left out of miou, the mean over the classes present; with no pixels at
  all miou and pixel_acc are 0.0.
  """
  c = _host_matrix(confusion)
  tp = np.diag(c)
  union = c.sum(axis=0) + c.sum(axis=1) - tp  # TP + FP + FN per class
  ious = [_ratio(t, u) for t, u in zip(tp, union)]
  present = [iou for iou, u in zip(ious, union) if u]
  out = {"miou": float(np.mean(present)) if present else 0.0, "pixel_acc": _ratio(tp.sum(), c.sum())}
  out.update({f"iou_{k}": iou for k, iou in enumerate(ious)})
  return out
