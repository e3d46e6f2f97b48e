"""Checkpoints for one workdir as it trains: orbax `CheckpointManager` with periodic async saves, keep-N and resume.

`StandardSave` of the whole train state (a `flax.struct.PyTreeNode` of jax arrays, optax state and a PRNG key -- raw
`PRNGKey` uint32 or typed `jax.random.key`, orbax handles both); reading back is `fmjax.checkpoints.restore`. The
run's config JSON is kept beside the steps (`fmjax.checkpoints.config_file`). Call `maybe_save` at every step: it also
consults orbax's multi-host preemption sync point, which must see every step.

A run may be killed at any moment (SIGKILL, power loss), so a step on disk may be unfinished or damaged. An unfinished
save (orbax's temporary directory) is reported and removed. Resuming takes the newest intact step: a damaged newer one
is reported in one line and moved to `<directory>.damaged/`, and if no step is intact the run stops with a
`CheckpointError` rather than train from scratch over it (`set_aside` starts a run afresh on purpose).

A save that meets a full disk fails in orbax's background thread, and orbax passes the error on at the next save,
wait or close (after logging it with its traceback, up to four times): there it becomes one `WorkdirError` naming
the directory, the state's size and the free space, the half-written step is removed, and the steps before it stay
(orbax deletes the steps beyond `keep` only once a save has finished).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath

from fmjax.checkpoints import config_file, restore
from fmjax.runtime import console, distributed, errors, files

DAMAGED_SUFFIX = ".damaged"
_UNFINISHED_MARK = ".orbax-checkpoint-tmp"  # orbax writes a step under <step><mark>... and renames it when done
_ORBAX = os.path.dirname(ocp.__file__) + os.sep  # orbax's log records come from files under here


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


class _FullDiskNoise:
  """Quiets orbax's noise about a save that failed on a full disk, which the Checkpointer reports in one line.

  Orbax logs the failure up to four times with its traceback, asyncio logs each abandoned write of the step as it
  is collected (maybe at exit), and tensorstore's writes that finish after orbax closed the save's event loop
  raise "Event loop is closed" unraisably, before the failure reaches the Checkpointer. Some of what orbax logs
  does not name the full disk: a write that meets a file of the step cut short by it fails with tensorstore's
  "NOT_FOUND: Error writing ... Error reading Byte range ..." in the save's thread, which logs it with its
  traceback before the Checkpointer learns how the save ended (seen on orbax 0.12.4, under load).

  So while a Checkpointer is open, log records (absl's, asyncio's) naming a full disk are dropped, orbax's records
  with a traceback are held, and unraisable "Event loop is closed" errors are held. Once a save failed on a full
  disk, what is held is dropped, and so is what orbax logs with a traceback until the Checkpointers close (the
  failed save's other writes ending) and, later, what it logs again of the same errors. Held records are passed
  on as soon as a save fails otherwise and when the last Checkpointer closes, held unraisables then too (when no
  save failed on a full disk). After such a failure the filters stay in place for the rest of the process.
  """
  lock = threading.Lock()
  open_count = 0  # Checkpointers open
  failed = False  # a save failed on a full disk in this process
  stopping = False  # ... and the Checkpointers open then are not all closed yet
  held: list = []  # unraisable "Event loop is closed" errors
  held_logs: list[logging.LogRecord] = []  # orbax's records with a traceback
  noise: set[str] = set()  # the texts of the errors of saves that failed on a full disk
  previous: Any = None  # the unraisable hook before ours

  @classmethod
  def keep(cls, record: logging.LogRecord) -> bool:
    """The log filter: whether `record` goes out now (dropped or held otherwise)."""
    failure = record.exc_info[1] if record.exc_info else None
    if ((failure is not None and files.is_no_space(failure))
        or any(text in record.getMessage() for text in files.NO_SPACE_TEXTS)):
      return False
    if failure is None or not record.pathname.startswith(_ORBAX):
      return True
    with cls.lock:
      if cls.stopping or cls.noise.intersection(str(e) for e in errors.causes(failure)):
        return False
      if not cls.open_count:  # (after a full disk the filter outlives the Checkpointers)
        return True
      cls.held_logs.append(record)
      return False

  @classmethod
  def opened(cls) -> None:
    with cls.lock:
      cls.open_count += 1
      if cls.open_count == 1 and not cls.failed:
        absl_logging.get_absl_logger().addFilter(cls.keep)
        logging.getLogger("asyncio").addFilter(cls.keep)
        cls.previous, sys.unraisablehook = sys.unraisablehook, cls.hook

  @classmethod
  def closed(cls) -> None:
    with cls.lock:
      cls.open_count -= 1
      if cls.open_count:
        return
      cls.stopping, held = False, []
      if not cls.failed:
        held, cls.held = cls.held, []
        absl_logging.get_absl_logger().removeFilter(cls.keep)
        logging.getLogger("asyncio").removeFilter(cls.keep)
        if sys.unraisablehook is cls.hook:  # else a hook installed meanwhile stays (ours, under it, passes on)
          sys.unraisablehook = cls.previous
    cls.pass_on()
    for unraisable in held:
      cls.previous(unraisable)

  @classmethod
  def pass_on(cls) -> None:
    """Hands the held log records to their loggers' handlers: they came with no failure on a full disk."""
    with cls.lock:
      held, cls.held_logs = cls.held_logs, []
    for record in held:
      logging.getLogger(record.name).callHandlers(record)

  @classmethod
  def full_disk(cls, error: BaseException) -> None:
    """A save failed on a full disk with `error`: what orbax logged of it, and will log again, is noise."""
    with cls.lock:
      cls.failed, cls.stopping, cls.held = True, True, []
      held, cls.held_logs = cls.held_logs, []
      for failure in [error] + [record.exc_info[1] for record in held]:
        cls.noise.update(str(e) for e in errors.causes(failure))

  @classmethod
  def hook(cls, unraisable: Any) -> None:
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
    with cls.lock:
      if closed_loop and cls.failed:
        return
      if closed_loop and cls.open_count:
        cls.held.append(unraisable)
        return
    cls.previous(unraisable)


# ----------------------------------------------------------------------------- the run's checkpointer


class Checkpointer:
  """orbax CheckpointManager for one workdir: periodic async saves, keep-N, resume."""

  def __init__(self, directory: str, *, every_steps: int, keep: int = 3, async_save: bool = True,
               config_json: str | None = None):
    if every_steps < 1 or keep < 1:
      raise errors.ConfigError(f"every_steps and keep must be >= 1, got {every_steps} and {keep}")
    self.directory = os.fspath(directory)
    restore.check_absolute(self.directory)
    _report_unfinished_saves(self.directory)
    self.every_steps = every_steps
    # Saves are decided here (see maybe_save), so orbax's own policy (which also saves the very first step it
    # sees) is bypassed with force=True; cleanup_tmp_directories drops half-written steps of a killed run.
    options = ocp.CheckpointManagerOptions(preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
                                           save_interval_steps=every_steps, enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=restore.handlers())
    self._preemption: tuple[int, bool] | None = None  # (step, reached) of the latest step asked about
    self._in_flight: tuple[int, int] | None = None  # (step, bytes of its state) of the async save last started
    if config_json is not None and jax.process_index() == 0:
      config_file.write_config_once(epath.Path(self.directory), config_json)
    _FullDiskNoise.opened()
    self._closed = False

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def all_steps(self) -> list[int]:
    """Steps present (including one whose async save is still being written), oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest saved step, or None for an empty directory."""
    return self._manager.latest_step()

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores `step` (None: the newest intact step) into `target`'s structure, honouring each leaf's sharding."""
    self.wait()
    return restore.newest_intact(self._manager, self.directory, target, step)[0]

  def restore_or_init(self, state: Any) -> tuple[Any, int]:
    """(newest intact checkpoint, its step) to resume from, or (state, 0) when nothing was saved yet.

    Damaged newer steps are reported and moved to `<directory>.damaged/`, so that the resumed run can save those
    steps again; with no intact step at all, a CheckpointError (nothing is moved then).
    """
    self.wait()
    if self.latest_step() is None:
      return state, 0
    restored, step, damaged = restore.newest_intact(self._manager, self.directory, state, None)
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

  def preempted(self, step: int) -> bool:
    """Whether `step` is the preemption sync point of a multi-process run: one of its processes got SIGTERM
    (JAX's preemption service catches it), and every process saves this same step and stops. Asked at every
    step (JAX's sync point must see each step, once)."""
    if self._preemption is None or self._preemption[0] != step:
      self._preemption = (step, bool(self._manager.reached_preemption(step)))
    return self._preemption[1]

  def save_due(self, step: int, *, force: bool = False) -> bool:
    """Whether `maybe_save(step)` will save: step % every_steps == 0, `force` (the last step, or a stop the
    loop was asked for) or a preemption is due. The loop checks the steps' metrics before any save this
    says is due."""
    return self.preempted(step) or force or step % self.every_steps == 0

  def maybe_save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts an (async) save when `save_due(step)`.

    Returns whether a save started. A step at or before the latest saved one is never saved again. The state's
    device buffers are copied before this returns, so the next step may donate them.
    """
    latest = self.latest_step()
    if not self.save_due(step, force=force) or (latest is not None and step <= latest):
      return False
    self.wait()  # orbax would wait for the previous save inside `save`; here its failure names its own step
    size = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(state))
    with self._full_disk_is_one_line((step, size)):
      started = bool(self._manager.save(step, args=ocp.args.StandardSave(state), force=True))
    self._in_flight = (step, size) if started else None
    return started

  def wait(self) -> None:
    """Blocks until in-flight async saves are on disk (and surfaces their errors)."""
    with self._full_disk_is_one_line(self._in_flight):
      self._manager.wait_until_finished()
    self._in_flight = None

  def close(self) -> None:
    """Waits for saves and stops orbax's background threads."""
    if self._closed:
      return
    try:
      with self._full_disk_is_one_line(self._in_flight, closing=True):
        self._manager.close()
    finally:
      self._in_flight, self._closed = None, True
      _FullDiskNoise.closed()

  @contextlib.contextmanager
  def _full_disk_is_one_line(self, saving: tuple[int, int] | None, closing: bool = False) -> Iterator[None]:
    """Turns a full disk met while `saving` (step, bytes) into `files.no_space`'s one line, after removing that
    step's half-written files; the finished steps stay (and the manager, unless `closing`, knows them again)."""
    try:
      yield
    except Exception as e:
      if saving is None or not files.is_no_space(e):
        _FullDiskNoise.pass_on()  # what orbax logged of this failure, before it
        raise
      step, size = saving
      self._in_flight = None
      _FullDiskNoise.full_disk(e)
      for unfinished in glob.glob(os.path.join(glob.escape(self.directory), f"{step}{_UNFINISHED_MARK}*")):
        shutil.rmtree(unfinished, ignore_errors=True)
      if not closing:
        self._manager.reload()  # orbax already counted the failed step in, and the steps beyond `keep` out
      kept = sorted(int(name) for name in os.listdir(self.directory) if name.isdigit() and int(name) != step)
      raise files.no_space(self.directory, f"saving checkpoint step {step}", size,
                           kept=(f"the newest intact checkpoint, step {kept[-1]}, is kept" if kept
                                 else "no checkpoint was saved before it")) from None
