"""The config a run saves beside its checkpoints (`config.json`), and looking a run up by it.

`config.json` holds the config in effect; a run resumed with changes to it (`fmjax.checkpoints.config_changes`)
also lists them under `CHANGES_KEY`, which readers of the config (`parse`) leave out.
"""

from __future__ import annotations

import json
import os

import ml_collections
from etils import epath

from fmjax.runtime import errors, files

CONFIG_FILE = "config.json"
CHANGES_KEY = "config_changes"  # the history of a resumed run's config: [{step, key, saved, given}, ...]


def read_config(directory: str) -> str | None:
  """The config JSON saved beside a run's checkpoints, or None when there is none."""
  path = epath.Path(directory) / CONFIG_FILE
  return path.read_text() if path.exists() else None


def parse(text: str) -> ml_collections.ConfigDict:
  """The config in effect of a saved `config.json`'s text: the run's config, without its history of changes."""
  saved = json.loads(text)
  saved.pop(CHANGES_KEY, None)
  return ml_collections.ConfigDict(saved)


def run_config(workdir: str, job: str, name: str, article: str = "a") -> ml_collections.ConfigDict:
  """The config saved with the run in `workdir`, which must be a run of `job` (`name`, after `article`,
  is what the errors call it: "a pretrain run", "an FmFormer run")."""
  directory = os.path.join(workdir, "checkpoints")
  saved = read_config(directory)
  if saved is None:
    raise errors.CheckpointError(f"{workdir}: no {name} run there ({directory}/{CONFIG_FILE} is missing)")
  config = parse(saved)
  if config.get("job") != job:
    raise errors.CheckpointError(f"{workdir}: holds a {config.get('job')!r} run, not {article} {name} run")
  return config


def write_config_once(directory: epath.Path, config_json: str) -> None:
  """Writes `config.json` whole or not at all unless one exists, which is kept: the trainer compares a resumed
  run's config with it and records what changed (`fmjax.checkpoints.config_changes`)."""
  json.loads(config_json)  # Fail early on text that later compatibility checks could not parse.
  path = os.path.join(os.fspath(directory), CONFIG_FILE)
  if not os.path.exists(path):
    files.write_atomic(path, config_json, what=f"the run's {CONFIG_FILE}")

