"""Cross-modal zero-shot transfer (the downstream job of Uni-Code pretraining) as a task.

The pretrain run in `config.init_from` gives the architecture (its saved config) and, through the
trainer's `init_from`, the weights; this job's config gives the data. Nothing is trained
(`eval_only`): the probes evaluator (`fmjax.evals.probes`) fits heads on one modality's code
vectors with labels and tests them on the other (V->C, C->V), beside the labelled-modality ceilings
and a model that was never trained.
"""

from __future__ import annotations

import ml_collections

from fmjax.checkpoints import config_file
from fmjax.runtime import errors
from fmjax.train.tasks import pretrain


def pretrain_config(source: str) -> ml_collections.ConfigDict:
  """The config saved with the pretrain run in workdir `source`."""
  if not source:
    raise errors.CheckpointError("transfer needs --config.init_from=<workdir of a configs/pretrain.py run>")
  config = config_file.run_config(source, "pretrain", "pretrain")
  if "model_name" not in config:  # runs saved before configs named their model: all Uni-Code
    config.model_name = "unicode"
  return config


class Task(pretrain.Task):
  """The pretrain task of the source run's architecture, on this job's data; its weights come from
  the trainer's `init_from`."""
  curve_keys = ()

  @classmethod
  def prepare(cls, config: ml_collections.ConfigDict) -> "Task":
    """The source run's config (its architecture and sample geometry) with this job's data, prepared."""
    source = pretrain_config(config.init_from)
    source.data = config.data
    return super().prepare(source)
