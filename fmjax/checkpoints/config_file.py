"""The config a run saves beside its checkpoints (`config.json`), and looking a run up by it."""

from __future__ import annotations

import json
import os

import ml_collections
from absl import logging
from etils import epath

from fmjax.runtime import errors

CONFIG_FILE = "config.json"


def read_config(directory: str) -> str | None:
  """The config JSON saved beside a run's checkpoints, or None when there is none."""
  path = epath.Path(directory) / CONFIG_FILE
  return path.read_text() if path.exists() else None


def run_config(workdir: str, job: str, name: str, article: str = "a") -> ml_collections.ConfigDict:
  """The config saved with the run in `workdir`, which must be a run of `job` (`name`, after `article`,
  is what the errors call it: "a pretrain run", "an FmFormer run")."""
  directory = os.path.join(workdir, "checkpoints")
  saved = read_config(directory)
  if saved is None:
    raise errors.CheckpointError(f"{workdir}: no {name} run there ({directory}/{CONFIG_FILE} is missing)")
  config = ml_collections.ConfigDict(json.loads(saved))
  if config.get("job") != job:
    raise errors.CheckpointError(f"{workdir}: holds a {config.get('job')!r} run, not {article} {name} run")
  return config


def write_config_once(directory: epath.Path, config_json: str) -> None:
  """Writes `config.json` atomically (temp file + rename) unless one exists; the first run's config is kept."""
  json.loads(config_json)  # Fail early on text that later compatibility checks could not parse.
  path = directory / CONFIG_FILE
  if path.exists():
    if path.read_text() != config_json:
      logging.warning("%s differs from this run's config; keeping the existing file.", path)
    return
  tmp = directory / f".{CONFIG_FILE}.tmp-{os.getpid()}"
  tmp.write_text(config_json)
  tmp.rename(path)

