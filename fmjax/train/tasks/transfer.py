"""Cross-modal zero-shot transfer (the downstream job of Uni-Code pretraining) as a task.

The pretrain run in `config.init_from` gives the architecture (its saved config; its model one of fmjax's
own, or the module this job's `model_name` names), through the trainer's `init_from` the weights, and
the data, but for the keys of `config.data` this job sets (`fmjax.data.config.inherit`). Nothing is
trained (`eval_only`): the probes evaluator (`fmjax.evals.probes`) fits heads on one modality's code
vectors with labels and tests them on the other (V->C, C->V), beside the labelled-modality ceilings
and a model that was never trained.
"""

from __future__ import annotations

import os

import ml_collections

from fmjax.checkpoints import config_file
from fmjax.data import config as data_config
from fmjax.runtime import console, errors, registry
from fmjax.train.tasks import pretrain


def pretrain_config(source: str, model_name: str = "") -> ml_collections.ConfigDict:
  """The config saved with the pretrain run in workdir `source`. Its model is `model_name` where one is given
  (this job's `--config.model_name`, which may name a module path), else the run's own, which must be one of
  fmjax's models: a run folder is data, and its config.json names no module to import
  (`registry.check_saved`)."""
  if not source:
    raise errors.CheckpointError("transfer needs --config.init_from=<workdir of a configs/pretrain.py run>")
  config = config_file.run_config(source, "pretrain", "pretrain")
  if model_name:
    config.model_name = model_name
  elif "model_name" not in config:  # runs saved before configs named their model: all Uni-Code
    config.model_name = "unicode"
  else:
    registry.check_saved(config.model_name, "Model", os.path.join(source, "checkpoints", config_file.CONFIG_FILE),
                         "model_name")
  return config


class Task(pretrain.Task):
  """The pretrain task of the source run's architecture, on its data but for the keys this job sets; its
  weights come from the trainer's `init_from`."""
  curve_keys = ()

  @classmethod
  def prepare(cls, config: ml_collections.ConfigDict) -> "Task":
    """The source run's config (its architecture, sample geometry and data, but for the data keys this
    job sets), prepared."""
    source = pretrain_config(config.init_from, config.model_name)
    source.data, taken = data_config.inherit(config.data, source.data)
    if taken:
      console.say(f"data of {config.init_from}: {', '.join(f'{key}={value!r}' for key, value in taken.items())}")
    return super().prepare(source)
