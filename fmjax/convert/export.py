"""A model with its variables on disk: `model.json` (class and fields) + an orbax checkpoint.

Written by the converter CLI so that converted official weights can be evaluated by the training
system (`--config.init_from=DIR`) without PyTorch. The loaded model takes its inputs by name:
`model.apply(variables, video=..., current=...)`, using those in `model.inputs`.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn

from fmjax.models import fmformer
from fmjax.runtime import errors

MODEL_CLASSES = {cls.__name__: cls for cls in (fmformer.FmFormer, fmformer.VideoFormer, fmformer.CurrentFormer)}
_NOT_SAVED = ("parent", "name", "dtype", "bn_axis_name", "attention")  # how to compute, not what: no variables


def model_fields(model: nn.Module) -> dict:
  """The constructor fields of a model that define its variables (JSON-able)."""
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
          if f.name not in _NOT_SAVED and f.init}


def save(directory: str, model: nn.Module, variables: dict) -> None:
  """Writes `directory` (must not exist yet, so nothing is overwritten)."""
  if os.path.exists(directory):
    raise errors.WorkdirError(f"{directory}: already exists; choose a new output directory")
  os.makedirs(directory)
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump({"class": type(model).__name__, "fields": model_fields(model)}, f, indent=1)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(os.path.join(directory, "variables")),
                      jax.tree.map(np.asarray, variables))


def is_export(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, "model.json"))


def load(directory: str) -> tuple[nn.Module, dict]:
  """Model and variables written by `save`."""
  path = os.path.join(directory, "model.json")
  if not os.path.exists(path):
    raise errors.CheckpointError(f"{directory}: no model.json here; not a converted model directory")
  with open(path) as f:
    spec = json.load(f)
  model = MODEL_CLASSES[spec["class"]](**spec["fields"])
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.abspath(os.path.join(directory, "variables")))
  return model, variables
