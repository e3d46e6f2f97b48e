"""Reading a finished run: `read(source)`, the one way fmjax reads another run's weights.

The trainer's `init_from` (and so the transfer job and `eval_only` runs), the warning evaluator's
`fmformer_from`, `fmjax.train.loop.restore` and the notebook all call it. A source is a run's workdir
(its `checkpoints/config.json` and the newest intact step, of which only the parameters, the model's
other collections and the aux nets are read: never the optimiser state, so no optimiser is rebuilt) or a
directory the converter CLI wrote (`model.json` + variables; no run config).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import ml_collections

from fmjax.checkpoints import config_file, restore
from fmjax.convert import export
from fmjax.runtime import registry

# How errors name each job's runs ("not an FmFormer run").
JOB_NAMES = {"fmformer": ("FmFormer", "an"), "pretrain": ("pretrain", "a"), "align": ("align", "an")}


class Run(NamedTuple):
  """A finished run: its saved config (None for a converted model), its variables (`params` and the model's
  other collections), its aux nets (e.g. Uni-Code's CLUB nets; None where it has none), its step and the
  folder it was read from."""
  config: ml_collections.ConfigDict | None
  variables: dict
  aux: Any = None
  step: int | None = None
  source: str = ""


def read(source: str, job: str | None = None, like: Any = None) -> Run:
  """The run (or converted model) in `source`. With `job`, anything but a run of that job is a CheckpointError.
  With `like` (a TrainState), a run's weights come back in its structure, checked against its shapes
  (`restore.read_weights`)."""
  if export.is_export(source) and job is None:
    _, variables = export.load(source)
    return Run(None, dict(variables), source=source)
  directory = os.path.join(source, "checkpoints")
  if job is not None:
    name, article = JOB_NAMES.get(job, (job, "a"))
    config = config_file.run_config(source, job, name, article)
  else:
    saved = config_file.read_config(directory)
    config = config_file.parse(saved) if saved is not None else None
  weights, step = restore.read_weights(directory, like)
  return Run(config, {"params": weights["params"], **(weights["model_state"] or {})}, weights["aux"], step, source)


def model_of(run: Run) -> Any:
  """`Model(**config.model)` of `run`'s saved `model_name` (runs saved before configs named their model: its
  `job`), for models built from their config alone, as FmFormer's. A run folder is data: the name must be one
  of fmjax's own models (`registry.check_saved`), never a module path."""
  key = "model_name" if "model_name" in run.config else "job"
  saved_in = os.path.join(run.source, "checkpoints", config_file.CONFIG_FILE)
  return registry.find(run.config[key], "Model", saved_in=saved_in, key=key)(**run.config.model)
