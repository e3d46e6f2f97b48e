"""A resumed run's config against the one its checkpoints were saved with (`config.json`).

Resuming with another seed, learning rate, batch size or data would mix two runs into one, and nothing about
the arrays' shapes would show it. So `check` compares the saved config with the given one key by key (dotted
keys, paths resolved) before any expensive work: a difference in a key of `SAFE_ON_RESUME` is taken on, any
other stops the run with one `ConfigError` naming the keys, unless the config sets `accept_changes`
(`--config.accept_changes=True`: take them on deliberately; `--config.restart=True` starts afresh instead).

Once the run has restored its step, `record` rewrites `config.json` as the config in effect, with the changes
taken on appended to its history (`config_file.CHANGES_KEY`: {step, key, saved, given}, `saved` or `given`
left out where the key was absent) at the step the run resumed from.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import ml_collections

from fmjax.checkpoints import config_file
from fmjax.runtime import errors, files

ACCEPT_KEY = "accept_changes"  # the config's flag that takes on every change of a resumed run

# The keys (and, with their sub-keys, subtrees) a resumed run may change without ACCEPT_KEY.
SAFE_ON_RESUME = (
    # Extends (or shortens) the run. The learning-rate schedule is built from it (fmjax.train.optim.make), so the
    # resumed steps follow the new total's schedule: the warm-up is the same, the cosine decay is stretched, so
    # the rate at the resumed step jumps up to where the longer schedule stands and decays to end_lr at the new end.
    "num_train_steps",
    "log_every",             # how often metrics are written: bookkeeping
    "checkpoint_every",      # how often a checkpoint is saved: bookkeeping
    "keep_checkpoints",      # how many are kept: bookkeeping
    "evals",                 # what is evaluated after training, and how: training does not read it
    "eval_only",             # an eval_only run trains nothing and is not checked; listed as run control
    "restart",               # a run started afresh saved restart=True; resuming it later says False
    "compile_cache",         # where compiled programs are kept: the programs are the same
    "input.worker_count",    # grain worker processes per host: the batches are the same (order by seed and index)
    "data.data_dir",         # where generated and prepared data is cached; the data itself is data.root's
    # The devices (a preempted run resumed on another machine): the global batch (input.batch_size) and its order
    # are the same, the gradient is averaged over all of it; only the order of float sums differs.
    "num_devices",
    "parallel",              # shard_map or pmap: the same step, wrapped differently
    "init_from",             # read by a fresh run only: a resumed run's weights are its checkpoint's
    ACCEPT_KEY,              # the flag itself
)
_ABSENT = object()  # a key one of the two configs does not have
_SHOWN = 3          # differences whose values the error shows (it names every key)
_VALUE_CHARS = 40   # a value's longest form in the error


class Change(NamedTuple):
  """A key whose value differs between the saved config and the given one (_ABSENT: not in that config)."""
  key: str
  saved: Any
  given: Any


def check(directory: str, config: ml_collections.ConfigDict) -> list[Change]:
  """The changes of `config` (paths resolved) from the config saved in checkpoint `directory`, all taken on
  (safe ones, or every one with `accept_changes`); a ConfigError naming them when some are not. None where
  the directory has no config.json (the run then writes it)."""
  saved_text = config_file.read_config(directory)
  if saved_text is None:
    return []
  path = os.path.join(directory, config_file.CONFIG_FILE)
  try:
    saved = json.loads(saved_text)
  except json.JSONDecodeError as e:
    raise errors.CheckpointError(f"{path} cannot be read ({e}); remove it to resume with this run's config, or "
                                 "rerun with --config.restart=True to start afresh") from None
  saved.pop(config_file.CHANGES_KEY, None)
  changes = differences(saved, json.loads(config.to_json()))
  refused = [c for c in changes if not is_safe(c.key)]
  if refused and not config.get(ACCEPT_KEY, False):
    raise errors.ConfigError(
        f"{path}: this run resumes with another config; {_describe(refused)}; rerun with "
        f"--config.{ACCEPT_KEY}=True to resume with the change{'s' if len(refused) > 1 else ''} (recorded in "
        f"{config_file.CONFIG_FILE}), or with --config.restart=True to start afresh (the checkpoints are kept aside)")
  return changes


def record(directory: str, config: ml_collections.ConfigDict, changes: list[Change], step: int) -> None:
  """Rewrites `config.json` in `directory` (whole or not at all) as `config` with `changes` appended to its
  history at `step` (the step the run resumed from). The accept flag is saved False: it takes on these
changes, not later ones."""
  path = os.path.join(directory, config_file.CONFIG_FILE)
  history = json.loads(config_file.read_config(directory) or "{}").get(config_file.CHANGES_KEY, [])
  for change in (c for c in changes if c.key != ACCEPT_KEY):  # the flag is how, not what, the run changed
    values = {name: value for name, value in zip(("saved", "given"), change[1:]) if value is not _ABSENT}
    history.append({"step": int(step), "key": change.key, **values})
  in_effect = json.loads(config.to_json())
  in_effect[ACCEPT_KEY] = False  # taken on once: a later resume with other changes is checked again
  in_effect[config_file.CHANGES_KEY] = history
  files.write_atomic(path, json.dumps(in_effect), what=f"the run's {config_file.CONFIG_FILE}")


def differences(saved: dict, given: dict) -> list[Change]:
  """The keys (dotted, in the saved config's order, then the given one's new keys) whose values differ."""
  flat_saved, flat_given = _flat(saved), _flat(given)
  keys = list(flat_saved) + [k for k in flat_given if k not in flat_saved]
  return [Change(k, flat_saved.get(k, _ABSENT), flat_given.get(k, _ABSENT)) for k in keys
          if flat_saved.get(k, _ABSENT) != flat_given.get(k, _ABSENT)]


def is_safe(key: str) -> bool:
  """Whether dotted `key` is, or lies under, a key of SAFE_ON_RESUME."""
  return any(key == safe or key.startswith(f"{safe}.") for safe in SAFE_ON_RESUME)


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flat(value, f"{prefix}{name}."))
    else:
      flat[f"{prefix}{name}"] = value
  return flat


def _describe(changes: list[Change]) -> str:
  """'KEY (saved V, given W), ...' for the first few, then the other keys by name."""
  shown = [f"{c.key} (saved {_short(c.saved)}, given {_short(c.given)})" for c in changes[:_SHOWN]]
  rest = [c.key for c in changes[_SHOWN:]]
  more = f", and {len(rest)} more: {', '.join(rest)}" if rest else ""
  return f"{len(changes)} key{'s' if len(changes) > 1 else ''} differ{'s' if len(changes) == 1 else ''}: " \
         f"{', '.join(shown)}{more}"


def _short(value: Any) -> str:
  text = "(absent)" if value is _ABSENT else json.dumps(value)
  return text if len(text) <= _VALUE_CHARS else text[:_VALUE_CHARS - 3] + "..."
