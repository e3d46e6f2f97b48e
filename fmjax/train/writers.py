"""Metric writers: one JSON line per write in `<workdir>/metrics.jsonl`, and TensorBoard event files.

The JSONL file is the record the report and the tests read back (`read_metrics`); the event files under
`<workdir>/tb/` are for watching a run in TensorBoard. Event files come from tensorboardX, so neither
TensorFlow nor CLU is needed, and PyTorch is kept out (see `_tensorboardx`). Only JAX process 0
writes: other processes pass `enabled=False`.

Resumed runs append to the same files. A run restored from an earlier checkpoint logs some steps
again; `read_metrics` resolves that to the later run's records.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def _python_scalar(key: str, value: Any) -> float | int:
  """A Python float (or int, for integer and bool values) from a Python, numpy or JAX scalar."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"metric {key!r} is not a scalar: shape {array.shape}")
  item = array.reshape(()).item()
  return int(item) if isinstance(item, (bool, int)) else float(item)


def _tensorboardx() -> Any:
  """tensorboardX, imported on first use and without PyTorch.

  tensorboardX's writer module tries `import torch` (only to accept torch tensors as values), which
  pulls all of PyTorch into a training process whenever the optional torch extra is installed. Where
  torch is not imported yet, it is marked unimportable for the duration of this import only.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX
    return tensorboardX
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    import tensorboardX
  finally:
    del sys.modules["torch"]
  return tensorboardX


class MetricWriter:
  """Appends scalars to `<workdir>/metrics.jsonl` and `<workdir>/tb/` event files; a context manager.

  `enabled=False` (any JAX process but 0) makes every method a no-op and creates no files.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    # A run killed mid-write can leave a partial last line: end it so the next record stays parseable.
    torn = os.path.exists(path) and os.path.getsize(path) > 0 and not _ends_with_newline(path)
    self._jsonl = open(path, "a", encoding="utf-8")
    if torn:
      self._jsonl.write("\n")
    self._tb = _tensorboardx().SummaryWriter(logdir=os.path.join(workdir, TB_DIR))

  def write(self, step: int, scalars: Mapping[str, Any], split: str = "train") -> None:
    """Logs `scalars` at `step`: one flushed JSON line {"step", "split", **scalars}, and `split/key` in TB.

    Write all of a split's scalars for a step in one call: `read_metrics` keeps one record per
    (split, step).
    """
    if not self.enabled:
      return
    if self._jsonl is None:
      raise ValueError(f"MetricWriter for {self.workdir} is closed")
    reserved = {"step", "split"} & set(scalars)
    if reserved:
      raise ValueError(f"metric names {sorted(reserved)} are reserved for the record's step and split")
    step = int(step)
    values = {key: _python_scalar(key, value) for key, value in scalars.items()}
    self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
    self._jsonl.flush()
    for key, value in values.items():
      self._tb.add_scalar(f"{split}/{key}", value, step)
    self._tb.flush()

  def close(self) -> None:
    """Flushes and closes both files; further closes are no-ops."""
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _ends_with_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` in step order, with each (split, step) once.

  Later lines win: a run resumed from the checkpoint at step c logs steps after c again, so when a
  split's step is not past the last step already read for that split (a restart), the earlier records
  of that split at that step or later, and those of other splits at later steps, are dropped. This
  also removes the tail of an interrupted run that the resumed run has not reached yet. Lines that are
  not JSON objects (a torn last line) are skipped with a warning. A missing file gives [].
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records: list[dict[str, Any]] = []
  last_step: dict[str, int] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        step, split = int(record["step"]), record["split"]
      except (ValueError, TypeError, KeyError) as e:
        warnings.warn(f"{path}:{number}: skipping unreadable metrics line ({e})")
        continue
      if split in last_step and step <= last_step[split]:
        records = [r for r in records if r["step"] < step or (r["step"] == step and r["split"] != split)]
        last_step = {}
        for r in records:
          last_step[r["split"]] = max(last_step.get(r["split"], r["step"]), r["step"])
      records.append(record)
      last_step[split] = max(last_step.get(split, step), step)
  return sorted(records, key=lambda r: r["step"])
