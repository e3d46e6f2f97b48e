"""Paths a user gives, resolved once where they enter: relative to the current directory, `~` expanded.

`launch/main.py`, `launch/data.py` and `train_and_evaluate` resolve their paths here, so everything
behind them (orbax, TFDS, the writers) sees absolute paths and a run does not depend on where a later
step of it happens to look from. An empty string keeps its meaning, "use the default".
"""

from __future__ import annotations

import copy
import os
import tempfile

import ml_collections

from fmjax.runtime import errors, files

# The config keys that hold paths: these, and at any depth every key named `*_from` (a run's workdir or
# a converted model: init_from, input.current_shift_from, an evaluator's fmformer_from).
CONFIG_PATH_KEYS = ("data.root", "data.data_dir")
RUN_KEY_SUFFIX = "_from"


def resolve(path: str | os.PathLike) -> str:
  """`path` made absolute against the current directory, with `~` expanded; '' stays ''."""
  path = os.fspath(path)
  return os.path.abspath(os.path.expanduser(path)) if path else path


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` (as locked as the original) whose path keys hold resolved paths."""
  resolved = copy.deepcopy(config)
  for key in CONFIG_PATH_KEYS:
    *parents, name = key.split(".")
    node = resolved
    for parent in parents:
      node = node.get(parent) if isinstance(node, ml_collections.ConfigDict) else None
    if isinstance(node, ml_collections.ConfigDict) and isinstance(node.get(name), str):
      node[name] = resolve(node[name])
  _resolve_run_keys(resolved)
  return resolved


def _resolve_run_keys(node: ml_collections.ConfigDict) -> None:
  for name, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      _resolve_run_keys(value)
    elif name.endswith(RUN_KEY_SUFFIX) and isinstance(value, str):
      node[name] = resolve(value)


def ensure_writable_dir(directory: str, what: str = "workdir") -> str:
  """Creates `directory` if needed and proves it writable: a byte written and fsynced to a file there (an empty
  file is made even on a full disk). A `WorkdirError` naming it otherwise (`files.no_space`'s for a full disk)."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".fmjax-write-test-") as f:
      f.write(b"\0")
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    if files.is_no_space(e):
      raise files.no_space(directory, f"checking that the {what} can be written") from None
    raise errors.WorkdirError(f"{what} {directory} cannot be created or written: {e.strerror or e}") from None
  return directory
