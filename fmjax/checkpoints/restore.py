"""Reading checkpoints back: a saved step into a target of the same structure, deciding which steps are intact.

The flax-examples pattern: `StandardRestore` into an abstract target carrying each leaf's sharding, so arrays come back
laid out as the target's. Before restoring, the saved tree metadata is compared with the target, so a mismatch is one
`CheckpointError` naming the leaf rather than orbax's asyncio traceback. A finished step counts as intact when orbax's
step metadata records its commit, its tree metadata reads, and its arrays restore. Where one of these fails, the step
is a `DamagedCheckpoint` (which `newest_intact` skips for an older step) only on evidence: a file of it missing or
cut short, metadata that is not JSON or lacks what orbax writes (`unreadable`). A failure without that evidence (no
permission, an I/O error, a timeout, a full disk, an unrecognised error) is a `CheckpointError` that stops the run
and moves nothing. Steps written in the layout before
`TrainState.aux` are read in that layout and upgraded (`fmjax.checkpoints.legacy`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from fmjax.checkpoints import legacy
from fmjax.runtime import compat, console, errors


class DamagedCheckpoint(errors.CheckpointError):
  """A finished step that cannot be read back (truncated or missing files, unreadable metadata)."""


def _leaf_name(path: jax.tree_util.KeyPath) -> str:
  return jax.tree_util.keystr(path, simple=True, separator=".") or "<root>"


def _abstract_leaf(x: Any) -> Any:
  """A restore target leaf: jax arrays become ShapeDtypeStructs with their (concrete) sharding."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, jax.ShapeDtypeStruct) and isinstance(x.sharding, jax.sharding.NamedSharding):
    if isinstance(x.sharding.mesh, jax.sharding.AbstractMesh):
      # jax.eval_shape of sharded arrays gives abstract meshes, which orbax cannot place arrays on.
      mesh = jax.sharding.get_mesh()
      if mesh.empty or mesh.abstract_mesh != x.sharding.mesh:
        raise errors.CheckpointError("restore target has a sharding over an abstract mesh; build it under "
                              "jax.set_mesh(mesh) or give NamedSharding(mesh, spec) with a concrete mesh")
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.NamedSharding(mesh, x.sharding.spec))
  if isinstance(x, np.generic):
    return np.asarray(x)  # orbax rejects numpy scalars as restore targets.
  return x


def _saved_shape(x: Any) -> tuple[int, ...]:
  """The shape a target leaf has on disk (a typed PRNG key is stored as its uint32 key data)."""
  shape = tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)
  dtype = getattr(x, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    shape = tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype)).shape)
  return shape


def _check_matches(saved_tree: Any, target: Any, where: str) -> None:
  """Raises CheckpointError naming the first mismatched leaves between the saved tree and `target`."""
  saved = {_leaf_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
  expected = {_leaf_name(p): _saved_shape(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  problems = [f"{k} missing from the checkpoint (expected shape {expected[k]})" for k in expected if k not in saved]
  problems += [f"{k} saved but not in the target (saved shape {saved[k]})" for k in saved if k not in expected]
  problems += [f"{k} saved shape {saved[k]} vs expected {expected[k]}"
               for k in expected if k in saved and saved[k] != expected[k]]
  if problems:
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    raise errors.CheckpointError(f"checkpoint {where} does not match the target: {'; '.join(problems[:3])}{more}")


def _first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of the innermost cause of `error` (orbax wraps tensorstore's specific message), shortened."""
  *_, error = errors.causes(error)
  text = str(error).strip()
  line = text.splitlines()[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def handlers() -> ocp.handlers.CheckpointHandlerRegistry:
  """The handler of the one (default) item a step holds, declared up front (orbax's successor to `item_handlers`).

  Declaring it, rather than leaving orbax to infer it from the first save or restore, lets a fresh manager read
  an existing step's tree metadata before restoring it.
  """
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  handler = ocp.StandardCheckpointHandler()
  registry.add(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, ocp.args.StandardSave, handler)
  registry.add(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, ocp.args.StandardRestore, handler)
  return registry


def _saved_tree(manager: ocp.CheckpointManager, step_dir: str, step: int) -> Any:
  """The tree metadata of a finished `step`; DamagedCheckpoint where its files show it or the step's commit
  record missing or malformed, a CheckpointError where they cannot be read now."""
  try:
    step_metadata = manager.metadata(step)
  except Exception as e:  # orbax raises bare Exception/ValueError
    raise unreadable(step_dir, e, "its metadata cannot be read") from e
  committed = step_metadata.commit_timestamp_nsecs is not None
  saved_tree = getattr(step_metadata.item_metadata, "tree", None) if committed else None
  if saved_tree is None:  # orbax reads an unreadable metadata file as a missing one: the files say which it is
    raise unreadable(step_dir, None, "its step metadata is missing" if not committed
                     else "its tree metadata is missing")
  return saved_tree


# ----------------------------------------------------------------------------- damaged, or unreadable for now

# A step is only called damaged on evidence that its files are incomplete or are not what orbax wrote (a damaged
# step is moved aside on resume); any other failure to read it (no permission, an I/O error, a timeout of a network
# filesystem, a full disk, an error not recognised) stops the run with everything left in place.
STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's commit record of a step: JSON with its commit time
TREE_METADATA = os.path.join(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, "_METADATA")  # JSON: the saved tree
# Where orbax passes on no exception with an errno, tensorstore (the arrays' reader) gives the errno in its
# message: "... Permission denied [os_error_code='13']" (tensorstore 0.1.86), "[OS error 13: ..." (older).
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)|\[OS error (\d+)")
# With no errno, tensorstore's status code says the data read is not what was written: a file cut short
# (OUT_OF_RANGE: "Requested byte range [0, 4476) is not valid for value of size 20"), a file of the step missing
# (NOT_FOUND), a checksum failure (DATA_LOSS), bytes that do not decode ("Error decoding local file ...
# manifest.ocdbt": Error decoding manifest: ZSTD_decompressStream() failed: Data corruption detected", with no code).
# Its other codes (PERMISSION_DENIED, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...) are not evidence.
_DAMAGE_CODES = re.compile(r"\b(OUT_OF_RANGE|NOT_FOUND|DATA_LOSS):|Error decoding ")


def _errno_of(error: BaseException) -> int | None:
  """The OS error behind `error` or any exception it was raised from (ETIMEDOUT for a timeout); None if none."""
  for cause in errors.causes(error):
    if isinstance(cause, OSError) and cause.errno:
      return cause.errno
    if isinstance(cause, TimeoutError):
      return errno.ETIMEDOUT
    found = _TENSORSTORE_ERRNO.search(str(cause))
    if found:
      return int(found.group(1) or found.group(2))
  return None


def _says_damaged(error: BaseException) -> bool:
  """Whether `error` (or what it was raised from) is a read of data that is not what orbax wrote."""
  return any(isinstance(cause, json.JSONDecodeError) or _DAMAGE_CODES.search(str(cause))
             for cause in errors.causes(error))


def _raise_directory_error(error: OSError) -> None:
  raise error


def _files_evidence(step_dir: str) -> str | None:
  """What a finished step's own files show wrong with it, or None where its commit record and tree metadata
  are there and parse and every file opens. An OSError (the files cannot be read now) is passed on."""
  for name, what, key in ((STEP_METADATA, "step metadata", "commit_timestamp_nsecs"),
                          (TREE_METADATA, "tree metadata", "tree_metadata")):
    try:
      with open(os.path.join(step_dir, name), "rb") as f:
        text = f.read()
    except FileNotFoundError:
      return f"its {what} is missing"
    try:
      parsed = json.loads(text)
    except ValueError:
      return f"its {what} ({name}) is not valid JSON"
    if not isinstance(parsed, dict) or parsed.get(key) is None:
      return f"its {what} ({name}) has no {key}"
  for folder, _, names in os.walk(step_dir, onerror=_raise_directory_error):
    for name in names:
      with open(os.path.join(folder, name), "rb") as f:
        f.read(1)
  return None


def unreadable(step_dir: str, error: BaseException | None, damage: str) -> errors.CheckpointError:
  """The error for a step orbax could not read (`error`; None where orbax found a file missing, said as `damage`):
  a DamagedCheckpoint on evidence of damage, otherwise a CheckpointError that leaves every step in place."""
  number = _errno_of(error) if error is not None else None
  cause = os.strerror(number) if number is not None else None
  if number in (None, errno.ENOENT):  # the OS refused nothing: the files tell whether the step is damaged
    try:
      evidence = _files_evidence(step_dir)
    except FileNotFoundError:  # listed a moment ago
      evidence = "a file of it is missing"
    except OSError as e:
      number, evidence = _errno_of(e), None
      cause = os.strerror(number) if number else str(e)
    if evidence is not None:
      return DamagedCheckpoint(f"checkpoint {step_dir} is damaged: {evidence}")
    if number is None and error is not None and _says_damaged(error):
      return DamagedCheckpoint(f"checkpoint {step_dir} is damaged: {damage} ({_first_line(error)})")
  if cause is None:
    cause = _first_line(error) if error is not None else f"orbax says {damage}, yet its files are there and parse"
  return errors.CheckpointError(f"checkpoint {step_dir} cannot be read now ({cause}); nothing was moved; fix the "
                                f"access (permissions, the filesystem or its mount) and rerun")


def _first_intact(steps: list[int], read: Any) -> tuple[Any, int | None, list[tuple[int, str]]]:
  """(read(step), step, [(damaged step, reason)]) of the first of `steps` that `read` reads without a
  DamagedCheckpoint ((None, None, damaged) where none does), under one probe of orbax's noise (a damaged
  step's late reads are covered)."""
  damaged = []
  with compat.quiet_orbax_probe():
    for step in steps:
      try:
        return read(step), step, damaged
      except DamagedCheckpoint as e:
        damaged.append((step, str(e)))
  return None, None, damaged


def _open_read_only(directory: str, registry: ocp.handlers.CheckpointHandlerRegistry) -> ocp.CheckpointManager:
  """A read-only manager of another run's checkpoint `directory` (absolute, existing)."""
  check_absolute(directory)
  if not epath.Path(directory).is_dir():
    raise errors.CheckpointError(f"no checkpoint directory {directory}")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  with compat.quiet_orbax_probe():  # orbax warns that the directory is read-only, as asked
    return ocp.CheckpointManager(directory, options=options, handler_registry=registry)


def _restore_step(manager: ocp.CheckpointManager, directory: str, target: Any, step: int) -> Any:
  """Restores `step` of `manager` into `target`: CheckpointError on a mismatch, DamagedCheckpoint on damage."""
  step_dir = os.path.join(directory, str(step))
  abstract = jax.tree.map(_abstract_leaf, target)
  saved_tree = _saved_tree(manager, step_dir, step)
  before_aux = legacy.is_old(saved_tree, target)
  if before_aux:  # written before TrainState.aux: read it in its own layout, then upgrade it
    abstract = legacy.StateBeforeAux.layout_of(abstract)
  _check_matches(saved_tree, abstract, f"{directory} step {step}")
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises bare Exception/ValueError; keep the cause.
    raise unreadable(step_dir, e, "its arrays cannot be read") from e
  return restored.upgraded(target) if before_aux else restored


def _warn_weak_types(target: Any) -> None:
  weak = [_leaf_name(p) for p, x in jax.tree_util.tree_flatten_with_path(target)[0] if getattr(x, "weak_type", 0)]
  if weak:  # orbax 0.12.8 drops weak types: a resumed run would then promote dtypes differently.
    logging.warning("weak-typed leaves %s are restored strongly typed; give state leaves explicit dtypes.", weak[:3])


def newest_intact(manager: ocp.CheckpointManager, directory: str, target: Any,
                  step: int | None) -> tuple[Any, int, list[tuple[int, str]]]:
  """(restored, its step, [(damaged step, reason)]) for `step`, or for the newest intact step when `step` is None.

  With step None, damaged newer steps are skipped, and a CheckpointError names them all when none is intact. A
  mismatch with `target` is never skipped: the older steps of the same run would not fit either.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise errors.CheckpointError(f"no checkpoint in {directory}")
  if step is not None and step not in steps:
    raise errors.CheckpointError(f"no checkpoint for step {step} in {directory} (steps there: {sorted(steps)})")
  _warn_weak_types(target)
  if step is not None:  # that step or its error
    with compat.quiet_orbax_probe():
      return _restore_step(manager, directory, target, step), step, []
  restored, found, damaged = _first_intact(steps, lambda s: _restore_step(manager, directory, target, s))
  if found is not None:
    return restored, found, damaged
  names = ", ".join(str(s) for s, _ in damaged)
  raise errors.CheckpointError(f"no intact checkpoint in {directory}: steps {names} are "
                               f"damaged (newest: {damaged[0][1]}); rerun with --config.restart=True to start afresh "
                               f"(the old checkpoints are kept aside)")


def restore_from(directory: str, target: Any, step: int | None = None) -> Any:
  """Restores another run's checkpoint (read-only: evaluation of a finished run, init_from) into `target`.

  Without `step`, the newest intact one; a damaged newer one is reported and skipped (and left in place).
  """
  with _open_read_only(directory, handlers()) as manager:
    restored, step, damaged = newest_intact(manager, directory, target, step)
  for _, reason in damaged:
    console.say(f"{reason}; using step {step}")
  return restored


def check_absolute(directory: str) -> None:
  if not os.path.isabs(directory):  # orbax fails on relative paths, in its background save thread
    raise ValueError(f"checkpoint directory {directory!r} is relative; resolve user paths with "
                     "fmjax.runtime.paths.resolve")


WEIGHTS = ("params", "model_state", "aux")  # what a run reader takes from a step; not its optimiser state or step


def read_weights(directory: str, like: Any = None) -> tuple[dict[str, Any], int]:
  """({'params', 'model_state', 'aux'} as host arrays, step) of the newest intact step of another run's
  `directory`, restored partially: nothing else is read, so no optimiser is needed. With `like` (a TrainState
  or anything with those three fields), they come back in its structure, after a check of the saved shapes
  against it (a CheckpointError naming the leaves that differ); without, in the saved tree's (dicts and
  lists). A step in the layout before `TrainState.aux` has its aux nets taken out of `model_state`."""
  partial = ocp.handlers.DefaultCheckpointHandlerRegistry()
  partial.add(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
  with _open_read_only(directory, partial) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
    weights, step, damaged = _first_intact(steps, lambda s: _read_weights_of(manager, directory, s, like))
  if step is None:
    raise errors.CheckpointError(f"no intact checkpoint in {directory} (newest: {damaged[0][1]})" if damaged
                                 else f"no checkpoint in {directory}")
  for _, reason in damaged:
    console.say(f"{reason}; using step {step}")
  return weights, step


def _read_weights_of(manager: ocp.CheckpointManager, directory: str, step: int, like: Any) -> dict[str, Any]:
  step_dir = os.path.join(directory, str(step))
  tree = _saved_tree(manager, step_dir, step)
  if not isinstance(tree, dict):
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its tree metadata is not a train state's")
  old = "aux" not in tree  # the layout before TrainState.aux
  if like is None:
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype),
                          {k: tree[k] for k in WEIGHTS if jax.tree.leaves(tree.get(k))})
  else:
    model_state = dict(like.model_state)
    if old and like.aux is not None:
      model_state[legacy.LEGACY_AUX_KEY] = like.aux
    wanted = {"params": like.params, "model_state": model_state, "aux": None if old else like.aux}
    target = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), v)
              for k, v in wanted.items() if jax.tree.leaves(v)}
    _check_matches({k: tree[k] for k in target if k in tree}, target, f"{directory} step {step}")
  restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), target)
  try:
    weights = manager.restore(step, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                 partial_restore=True)) if target else {}
  except Exception as e:  # orbax raises bare Exception/ValueError; keep the cause
    raise unreadable(step_dir, e, "its arrays cannot be read") from e
  weights = {k: weights.get(k) for k in WEIGHTS}
  if old:
    weights["model_state"], weights["aux"] = legacy.split_aux(weights["model_state"])
  return weights
