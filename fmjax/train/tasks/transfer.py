"""Cross-modal zero-shot transfer (the downstream job of Uni-Code pretraining).

Restores the encoders and the codebook of a pretrain run (`config.init_from`, its workdir), freezes
them, fits a small head on one modality's code vectors with labels and tests it on the other
modality: V->C and C->V, beside the labelled-modality upper bounds (V->V, C->C) and the same heads on
a model that was never trained (random frozen encoders and codebook, the no-pretraining baseline).
The architecture comes from the pretrain run's saved config; the data from this job's config.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from fmjax import console, report
from fmjax.train import checkpoint, initialize, loop, optim
from fmjax.train.state import TrainState
from fmjax.train.tasks import pretrain

PAIRS = ("v2c", "c2v", "v2v", "c2c")


def load_pretrained(source: str, data: ml_collections.ConfigDict) -> tuple[pretrain.PretrainTask, dict, dict]:
  """(task, trained variables, untrained variables) of the pretrain run in workdir `source`."""
  if not source:
    raise checkpoint.CheckpointError("transfer needs --config.init_from=<workdir of a configs/pretrain.py run>")
  directory = os.path.join(source, "checkpoints")
  saved = checkpoint.read_config(directory)
  if saved is None:
    raise checkpoint.CheckpointError(f"{source}: no pretrain run there ({directory}/config.json is missing)")
  config = ml_collections.ConfigDict(json.loads(saved))
  if config.get("job") != "pretrain":
    raise checkpoint.CheckpointError(f"{source}: holds a {config.get('job')!r} run, not a pretrain run")
  config.data = data
  task = pretrain.PretrainTask(config)
  tx, _ = optim.make(config.optimizer, config.num_train_steps)
  example = jax.tree.map(lambda x: x[:1], next(iter(task.sequences("train", 1, limit=1, batch=1))))
  template = jax.jit(lambda rng: TrainState.create(task.init(rng, example), tx))(jax.random.PRNGKey(config.seed))
  trained = initialize.load_into(template, source)
  drop_club = lambda state: {k: v for k, v in jax.device_get(state.variables()).items() if k != "club"}
  return task, drop_club(trained), drop_club(template)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Encodes train and test sequences with both models, fits and tests the heads, writes the run's files."""
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  task, trained, untrained = load_pretrained(config.init_from, config.data)
  e = config.eval
  train_stride = max(1, len(task.data.split("train")) // e.train_sequences)
  console.say(f"transfer: the frozen encoders and codebook of {config.init_from}; encoding sequences and fitting "
              f"heads for {', '.join(PAIRS)} and the never-trained baseline")
  train_batches = pretrain.read_batches(task.sequences("train", train_stride, limit=e.train_sequences,
                                                      batch=e.batch_size))
  test_batches = pretrain.read_batches(task.sequences(e.split, e.stride, batch=e.batch_size))
  results = {}
  for name, variables in (("", trained), ("baseline_", untrained)):
    probes = pretrain.cross_modal_probes(variables, task.encode(variables, train_batches),
                                         task.encode(variables, test_batches), config.head_steps)
    for pair, metrics in probes.items():
      if name and pair not in ("v2c", "c2v"):
        continue
      results.update({f"{name}{pair}_{k}": v for k, v in metrics.items()})
  test_labels = np.concatenate([b["labels"] for b in test_batches])
  summary = {**results, "test_steps": int(test_labels.size), "abnormal_share": float(test_labels.mean()),
             "wall_s": round(time.time() - start, 2), "peak_rss_mb": loop.peak_rss_mb()}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, sort_keys=True)
  page = report.Report(workdir, f"transfer run: {os.path.basename(os.path.abspath(workdir))}")
  page.add_text("Source", f"Encoders and codebook from `{config.init_from}` (frozen); linear heads on code vectors.")
  rows = {f"{'no pretraining ' if b else ''}{p}": " / ".join(f"{summary[f'{b}{p}_{k}']:.3f}"
                                                            for k in ("acc", "f1", "fdr", "mdr"))
          for b in ("", "baseline_") for p in PAIRS if f"{b}{p}_acc" in summary}
  page.add_table("acc / f1 / fdr / mdr (test split, per step)", rows)
  page.write()
  return summary
