"""Checkpoints for one workdir: orbax `CheckpointManager` with periodic async saves, keep-N, resume, stop on signal.

The flax-examples pattern: `StandardSave` of the whole train state (a `flax.struct.PyTreeNode` of jax arrays, optax
state and a PRNG key -- raw `PRNGKey` uint32 or typed `jax.random.key`, orbax 0.12.8 handles both), restored with
`StandardRestore` into an abstract target carrying each leaf's sharding, so arrays come back laid out as the target's.
Before restoring, the saved tree metadata is compared with the target, so a mismatch is one `CheckpointError` naming
the leaf rather than orbax's asyncio traceback. The run's config JSON is kept beside the steps as `config.json`.

Call `maybe_save` at every step: it also consults orbax's multi-host preemption sync point, which must see every step.

A run may be killed at any moment (SIGKILL, power loss), so a step on disk may be unfinished or damaged. An unfinished
save (orbax's temporary directory) is reported and removed; a finished step counts as intact when orbax's step metadata
records its commit, its tree metadata reads, and its arrays restore. Resuming takes the newest intact step: a damaged
newer one is reported in one line and moved to `<directory>.damaged/`, and if no step is intact the run stops with a
`CheckpointError` rather than train from scratch over it (`set_aside` starts a run afresh on purpose).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from fmjax.runtime import compat, console, distributed, errors
from fmjax.train import state as state_lib

CONFIG_FILE = "config.json"
DAMAGED_SUFFIX = ".damaged"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_UNFINISHED_MARK = ".orbax-checkpoint-tmp"  # orbax writes a step under <step><mark>... and renames it when done


CheckpointError = errors.CheckpointError


class DamagedCheckpoint(CheckpointError):
  """A finished step that cannot be read back (truncated or missing files, unreadable metadata)."""


# ----------------------------------------------------------------------------- saved config


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
    raise CheckpointError(f"{workdir}: no {name} run there ({directory}/{CONFIG_FILE} is missing)")
  config = ml_collections.ConfigDict(json.loads(saved))
  if config.get("job") != job:
    raise CheckpointError(f"{workdir}: holds a {config.get('job')!r} run, not {article} {name} run")
  return config


def _write_config_once(directory: epath.Path, config_json: str) -> None:
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


# ----------------------------------------------------------------------------- targets and their check


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
        raise CheckpointError("restore target has a sharding over an abstract mesh; build it under "
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
    raise CheckpointError(f"checkpoint {where} does not match the target: {'; '.join(problems[:3])}{more}")


def _first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of the innermost cause of `error` (orbax wraps tensorstore's specific message), shortened."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip()
  line = text.splitlines()[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _handlers() -> ocp.handlers.CheckpointHandlerRegistry:
  """The handler of the one (default) item a step holds, declared up front (orbax's successor to `item_handlers`).

  Declaring it, rather than leaving orbax to infer it from the first save or restore, lets a fresh manager read
  an existing step's tree metadata before restoring it.
  """
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  handler = ocp.StandardCheckpointHandler()
  registry.add(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, ocp.args.StandardSave, handler)
  registry.add(ocp.checkpoint_manager.DEFAULT_ITEM_NAME, ocp.args.StandardRestore, handler)
  return registry


def _restore_step(manager: ocp.CheckpointManager, directory: str, target: Any, step: int) -> Any:
  """Restores `step` of `manager` into `target`: CheckpointError on a mismatch, DamagedCheckpoint on damage."""
  step_dir = os.path.join(directory, str(step))
  abstract = jax.tree.map(_abstract_leaf, target)
  try:
    step_metadata = manager.metadata(step)
    committed = step_metadata.commit_timestamp_nsecs is not None
    saved_tree = getattr(step_metadata.item_metadata, "tree", None) if committed else None
  except Exception as e:  # pylint: disable=broad-except  -- orbax raises bare Exception/ValueError
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its metadata cannot be read "
                            f"({_first_line(e)})") from e
  if not committed:
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its step metadata is missing")
  if saved_tree is None:
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its tree metadata is missing")
  before_aux = isinstance(target, state_lib.TrainState) and isinstance(saved_tree, dict) and "aux" not in saved_tree
  if before_aux:  # written before TrainState.aux: read it in its own layout, then upgrade it
    abstract = state_lib.StateBeforeAux.layout_of(abstract)
  _check_matches(saved_tree, abstract, f"{directory} step {step}")
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # pylint: disable=broad-except  -- orbax raises bare Exception/ValueError; keep the cause.
    raise DamagedCheckpoint(f"checkpoint {step_dir} is damaged: its arrays cannot be read ({_first_line(e)})") from e
  return restored.upgraded(target) if before_aux else restored


def _warn_weak_types(target: Any) -> None:
  weak = [_leaf_name(p) for p, x in jax.tree_util.tree_flatten_with_path(target)[0] if getattr(x, "weak_type", 0)]
  if weak:  # orbax 0.12.8 drops weak types: a resumed run would then promote dtypes differently.
    logging.warning("weak-typed leaves %s are restored strongly typed; give state leaves explicit dtypes.", weak[:3])


def _restore(manager: ocp.CheckpointManager, directory: str, target: Any,
             step: int | None) -> tuple[Any, int, list[tuple[int, str]]]:
  """(restored, its step, [(damaged step, reason)]) for `step`, or for the newest intact step when `step` is None.

  With step None, damaged newer steps are skipped, and a CheckpointError names them all when none is intact. A
  mismatch with `target` is never skipped: the older steps of the same run would not fit either.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f"no checkpoint in {directory}")
  if step is not None and step not in steps:
    raise CheckpointError(f"no checkpoint for step {step} in {directory} (steps there: {sorted(steps)})")
  _warn_weak_types(target)
  damaged = []
  with compat.quiet_orbax_probe():  # orbax's warnings and abandoned reads: a step's problem is reported once
    for candidate in [step] if step is not None else steps:  # (one probe: a damaged step's late reads are covered)
      try:
        return _restore_step(manager, directory, target, candidate), candidate, damaged
      except DamagedCheckpoint as e:
        if step is not None:
          raise
        damaged.append((candidate, str(e)))
  raise CheckpointError(f"no intact checkpoint in {directory}: steps {', '.join(str(s) for s, _ in damaged)} are "
                        f"damaged (newest: {damaged[0][1]}); rerun with --config.restart=True to start afresh "
                        f"(the old checkpoints are kept aside)")


def restore_from(directory: str, target: Any, step: int | None = None) -> Any:
  """Restores another run's checkpoint (read-only: evaluation of a finished run, init_from) into `target`.

  Without `step`, the newest intact one; a damaged newer one is reported and skipped (and left in place).
  """
  _check_absolute(directory)
  if not epath.Path(directory).is_dir():
    raise CheckpointError(f"no checkpoint directory {directory}")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  with compat.quiet_orbax_probe():  # orbax warns that the directory is read-only, as asked
    manager = ocp.CheckpointManager(directory, options=options, handler_registry=_handlers())
  with manager:
    restored, step, damaged = _restore(manager, directory, target, step)
  for _, reason in damaged:
    console.say(f"{reason}; using step {step}")
  return restored


def _check_absolute(directory: str) -> None:
  if not os.path.isabs(directory):  # orbax fails on relative paths, in its background save thread
    raise ValueError(f"checkpoint directory {directory!r} is relative; resolve user paths with fmjax.runtime.paths.resolve")


def set_aside(directory: str) -> str | None:
  """Moves a run's checkpoint directory to `<directory>.replaced-<time>` (to start afresh); its new path or None."""
  if not os.path.isdir(directory) or not os.listdir(directory):
    return None
  destination = f"{directory}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
  os.replace(directory, destination)
  console.say(f"restart: the existing checkpoints of {directory} were moved to {destination}; training from step 0")
  return destination


def _report_unfinished_saves(directory: str) -> None:
  """One line per save that a killed run left unfinished (orbax removes them when the manager opens)."""
  if not os.path.isdir(directory):
    return
  for name in sorted(os.listdir(directory)):
    if _UNFINISHED_MARK in name:
      console.say(f"checkpoint {os.path.join(directory, name)}: an unfinished save (the run stopped while writing "
                  f"it); removed")


# ----------------------------------------------------------------------------- the run's checkpointer


class Checkpointer:
  """orbax CheckpointManager for one workdir: periodic async saves, keep-N, resume, save on SIGTERM/SIGINT."""

  def __init__(self, directory: str, *, every_steps: int, keep: int = 3, async_save: bool = True,
               config_json: str | None = None):
    if every_steps < 1 or keep < 1:
      raise errors.ConfigError(f"every_steps and keep must be >= 1, got {every_steps} and {keep}")
    self.directory = os.fspath(directory)
    _check_absolute(self.directory)
    _report_unfinished_saves(self.directory)
    self.every_steps = every_steps
    # Saves are decided here (see maybe_save), so orbax's own policy (which also saves the very first step it
    # sees) is bypassed with force=True; cleanup_tmp_directories drops half-written steps of a killed run.
    options = ocp.CheckpointManagerOptions(preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
                                           save_interval_steps=every_steps, enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=_handlers())
    self._stop_signal: int | None = None
    self._preemption: tuple[int, bool] | None = None  # (step, reached) of the latest step asked about
    if config_json is not None and jax.process_index() == 0:
      _write_config_once(epath.Path(self.directory), config_json)

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  @property
  def stop_requested(self) -> bool:
    """True once SIGTERM or SIGINT arrived while `install_signal_handlers` was active."""
    return self._stop_signal is not None

  def all_steps(self) -> list[int]:
    """Steps present (including one whose async save is still being written), oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest saved step, or None for an empty directory."""
    return self._manager.latest_step()

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores `step` (None: the newest intact step) into `target`'s structure, honouring each leaf's sharding."""
    self.wait()
    return _restore(self._manager, self.directory, target, step)[0]

  def restore_or_init(self, state: Any) -> tuple[Any, int]:
    """(newest intact checkpoint, its step) to resume from, or (state, 0) when nothing was saved yet.

    Damaged newer steps are reported and moved to `<directory>.damaged/`, so that the resumed run can save those
    steps again; with no intact step at all, a CheckpointError (nothing is moved then).
    """
    self.wait()
    if self.latest_step() is None:
      return state, 0
    restored, step, damaged = _restore(self._manager, self.directory, state, None)
    if jax.process_index() == 0:  # every process found the same damage; one moves it
      for bad, reason in damaged:
        console.say(f"{reason}; moved to {self._move_damaged(bad)}")
    if damaged:
      distributed.barrier("moved damaged checkpoints", timeout_s=600)
      self._manager.reload()
    console.say(f"resuming from step {step} of {self.directory}")
    return restored, step

  def _move_damaged(self, step: int) -> str:
    source = os.path.join(self.directory, str(step))
    destination = os.path.join(self.directory + DAMAGED_SUFFIX, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.replace(source, destination)
    return destination

  def save_due(self, step: int, *, force: bool = False) -> bool:
    """Whether `maybe_save(step)` will save: step % every_steps == 0, `force`, a stop was requested or a
    preemption is due. The loop checks the steps' metrics before any save this says is due."""
    if self._preemption is None or self._preemption[0] != step:  # JAX's sync point must see every step, once
      self._preemption = (step, bool(self._manager.reached_preemption(step)))
    return force or self._preemption[1] or self.stop_requested or step % self.every_steps == 0

  def maybe_save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts an (async) save when `save_due(step)`.

    Returns whether a save started. A step at or before the latest saved one is never saved again. The state's
    device buffers are copied before this returns, so the next step may donate them.
    """
    latest = self.latest_step()
    if not self.save_due(step, force=force) or (latest is not None and step <= latest):
      return False
    return bool(self._manager.save(step, args=ocp.args.StandardSave(state), force=True))

  def wait(self) -> None:
    """Blocks until in-flight async saves are on disk (and surfaces their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for saves and stops orbax's background threads."""
    self._manager.close()

  @contextlib.contextmanager
  def install_signal_handlers(self) -> Iterator[Checkpointer]:
    """While active, a first SIGTERM/SIGINT sets `stop_requested` instead of killing the process.

    The training loop then saves (maybe_save saves when a stop is requested) and exits cleanly; a second signal
    acts as the previous handler would. Previous handlers are restored on exit. A no-op outside the main thread,
    and with several JAX processes, where JAX's preemption service owns SIGTERM and orbax's preemption sync
    point (consulted by maybe_save) makes every host save the same step.
    """
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
      yield self
      return
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
      if self._stop_signal is None:
        self._stop_signal = signum
        logging.warning("%s received: saving a checkpoint and stopping.", signal.Signals(signum).name)
        return
      prev = previous[signum]
      if callable(prev):
        prev(signum, frame)
      elif prev != signal.SIG_IGN:  # SIG_DFL (or unknown): restore it and let the signal act.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for s in _STOP_SIGNALS:
      signal.signal(s, handler)
    try:
      yield self
    finally:
      for s, prev in previous.items():
        signal.signal(s, prev if prev is not None else signal.SIG_DFL)
