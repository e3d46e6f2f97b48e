"""The one trainer: `train_and_evaluate(config, workdir)` for every job (big_vision order).

paths -> the workdir held (one run at a time) -> a resumed run's config against its saved one
(`fmjax.checkpoints.config_changes`) -> devices -> task, optimiser and state -> restore (resume, or
`init_from`) -> compiled, donated data-parallel step -> loop driven by "is it time" checks (log,
checkpoint, stop on signal or non-finite loss) -> the evaluators of `config.evals` (a signal stops them at
once) -> metrics.jsonl, TensorBoard, summary.json, report.md. The job (`config.job`) and its evaluators
are found by name (`fmjax.runtime.registry`); the job's data is prepared before the job is built
(`Task.prepare`), and the evaluators get the job's pure predict functions, its data and its sample
geometry (`fmjax.evals.base.Context`), not the job.
"""

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from fmjax.checkpoints import checkpointer, config_changes
from fmjax.evals import base as eval_base
from fmjax.runtime import console, distributed, errors, files, locks, memory, parallel, paths, registry, report
from fmjax.runtime.parallel import REPLICATED
from fmjax.train import compile_cache, initialize, optim, step, writers


class Interrupted(Exception):
  """SIGTERM/SIGINT arrived: in training, a checkpoint was saved at `step`, and rerunning the command resumes;
  during the evaluation `evaluating` (`step`: the newest checkpoint, None for weights from init_from), nothing
  was written, and rerunning the command evaluates again."""

  def __init__(self, step: int | None, directory: str, evaluating: str | None = None):
    if evaluating is None:
      message = f"interrupted at step {step}; checkpoint saved in {directory}; rerun the same command to resume"
    else:
      kept = f"the checkpoint (step {step}) in {directory} is intact; " if step is not None else ""
      message = (f"interrupted during evaluation {evaluating}; no summary was written; {kept}rerun the same command "
                 "to evaluate again")
    super().__init__(message)
    self.step = step


NonFiniteLoss = errors.NonFiniteLoss
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOCK_FILE = ".fmjax.lock"  # in the workdir: held by a run's process 0 while the run lasts


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates, writes the run's files.

  Paths (`workdir` and the config's path keys) may be relative to the current directory or start
  with `~`; they are resolved here, once. The workdir must be writable before anything else happens.
  Returns the summary written to `<workdir>/summary.json`. `on_step(step)` is called after each
  step (tests use it to deliver a signal mid-run). Raises `Interrupted` after saving on a signal
  (or, during evaluation, at once, writing nothing), `NonFiniteLoss` when training diverges, a
  `WorkdirError` at once when another run holds the workdir (`one_run_per_workdir`), and other
  `fmjax.runtime.errors.UserError`s for bad input.
  """
  start_time = time.time()
  workdir, config = paths.resolve(workdir), paths.resolve_config(config)
  paths.ensure_writable_dir(workdir)
  compile_cache.enable(config.compile_cache, len(parallel.chosen_devices(config.num_devices) or jax.devices()))
  with one_run_per_workdir(workdir):
    return _train_and_evaluate(config, workdir, on_step, start_time)


@contextlib.contextmanager
def one_run_per_workdir(workdir: str):
  """Holds `<workdir>/.fmjax.lock` (process 0 of the run: the one that writes the run's files) while the
  block runs, or raises a WorkdirError naming the run that holds it.

  Two runs in one workdir (the same command started twice) would save into one checkpoints/ folder and
  append to one metrics.jsonl. The lock dies with its holder (`fmjax.runtime.locks`), so a killed run
  leaves none behind. Process 0 tells the others of a multi-process run whether it holds the lock (one
  small broadcast), so that every process of a second run stops with the same line: left to JAX, they
  would wait at their first barrier while process 0's exit waits for them (300 s), then abort.
  """
  lock_file = os.path.join(workdir, LOCK_FILE)
  lead = jax.process_index() == 0
  with locks.exclusive(lock_file, wait=False) if lead else contextlib.nullcontext(True) as held:
    if jax.process_count() > 1:
      held = bool(multihost_utils.broadcast_one_to_all(np.int32(held)))
    if not held:
      raise errors.WorkdirError(f"workdir {workdir} is in use by another run ({locks.holder(lock_file)}); wait "
                                "for it to end or stop it, or give this run another --workdir")
    yield


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, on_step, start_time: float) -> dict:
  """`train_and_evaluate` once its paths are resolved and its workdir is held."""
  # ---------------------------------------------------------------------------- checks
  checkpoints = os.path.join(workdir, "checkpoints")
  if config.eval_only and not config.init_from and not _has_checkpoint(checkpoints):
    raise errors.ConfigError(f"nothing to evaluate: {workdir} has no checkpoint and config.init_from is empty"
                             " (--config.init_from=DIR names a run's workdir or a converted model)")
  resuming = not config.restart and _has_checkpoint(checkpoints)  # then init_from's weights would be replaced
  changes = config_changes.check(checkpoints, config) if resuming and not config.eval_only else []
  lead = jax.process_index() == 0  # the one process that writes the run's files (all of them save checkpoints)
  if config.restart and not config.eval_only:
    if lead:
      checkpointer.set_aside(checkpoints)
    distributed.barrier("restart", timeout_s=600)

  # ---------------------------------------------------------------------------- devices, task, optimiser, state
  par, task = devices_and_task(config)
  host_batch = config.input.batch_size // jax.process_count()
  context = eval_context(task)
  evaluators = {name: eval_base.build(name, settings, context) for name, settings in config.evals.items()}
  tx, lr, state = initial_state(config, task, "" if resuming else config.init_from)

  ckpt = checkpointer.Checkpointer(checkpoints, every_steps=config.checkpoint_every, keep=config.keep_checkpoints,
                                 config_json=None if config.eval_only else config.to_json())
  with ckpt, writers.MetricWriter(workdir, enabled=lead) as writer, contextlib.ExitStack() as ending:
    # -------------------------------------------------------------------------- restore and train
    state, start = ckpt.restore_or_init(state)
    if lead and changes:  # config.json: the config in effect, and what changed at the step resumed from
      config_changes.record(checkpoints, config, changes, start)
    state = par.put_state(state)
    summary, evaluations = {}, []
    if not config.eval_only and start < config.num_train_steps:
      train_step = step.make_train_step(task, tx, lr, config.seed, par)
      state, summary["first_step_s"] = _train(config, task, par, ckpt, writer, train_step, state, start, host_batch,
                                              on_step)

    # -------------------------------------------------------------------------- evaluate
    variables, shared = state.variables(), eval_base.Shared()
    for name, evaluator in evaluators.items():
      console.say(f"evaluating: {name}")
      try:
        with StopSignals(at_once=True):
          evaluation = evaluator.run(par, variables, shared)
      except StopRequested:
        raise Interrupted(ckpt.latest_step(), ckpt.directory, evaluating=name) from None
      summary.update(evaluation.summary)
      evaluations.append(evaluation)
    summary.update(steps=int(par.get_state(state).step), wall_s=round(time.time() - start_time, 2),
                   peak_rss_mb=memory.peak_rss_mb())

    # -------------------------------------------------------------------------- write
    ending.enter_context(StopSignals(then="finishing summary.json and report.md first"))  # whole files, or none
    if lead:
      writer.write(summary["steps"], {k: v for k, v in summary.items() if np.isscalar(v)}, split="test")
      files.write_atomic(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1, sort_keys=True))
      _write_report(workdir, config, task, summary, evaluations)
  return summary


def devices_and_task(config: ml_collections.ConfigDict) -> tuple[parallel.DataParallel, Any]:
  """The devices and the task of a run of `config` (its paths resolved): the job's class found by name,
  its data prepared (`Task.prepare`: all the job's I/O), then the task built on it."""
  par = parallel.DataParallel(config.parallel, parallel.chosen_devices(config.num_devices))
  par.check_batch_size(config.input.batch_size)
  return par, registry.find(config.job, "Task").prepare(config)


def eval_context(task) -> eval_base.Context:
  """What the evaluators get from `task`: its predict functions, data, sample geometry and seed (the
  task's: a transfer job's is the pretrained run's, so its never-trained baseline is where that run began)."""
  return eval_base.Context(task.predict_fns(), task.data, task.inputs, task.config.seed)


def initial_state(config: ml_collections.ConfigDict, task, init_from: str = "") -> tuple[Any, Any, Any]:
  """(optimiser, its schedule, initial state) of a run of `config`, with `init_from`'s weights (a run's
  workdir or a converted model) when it names any."""
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  state = step.create_train_state(task, tx, jax.random.PRNGKey(config.seed))
  if init_from:
    state = initialize.load_into(state, init_from)
    console.say(f"weights from {init_from}")
  return tx, lr, state


def restore(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, parallel.DataParallel, Any]:
  """(task, devices, state on the devices) of the finished run of `config` in `workdir`: its newest intact
  checkpoint's weights (or `config.init_from`'s, for a run that trained nothing). For notebooks and
  analyses that go on from a run: `jax.device_get(par.get_state(state).variables())` are its variables."""
  workdir, config = paths.resolve(workdir), paths.resolve_config(config)
  source = workdir if _has_checkpoint(os.path.join(workdir, "checkpoints")) else config.init_from
  if not source:
    raise errors.CheckpointError(f"{workdir}: no checkpoint to restore (run the job there first)")
  par, task = devices_and_task(config)
  _, _, state = initial_state(config, task, source)
  return task, par, par.put_state(state)


def _has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _train(config, task, par, ckpt, writer, train_step, state, start: int, host_batch: int, on_step):
  """Steps `start`+1 .. num_train_steps; (the state, seconds from the loop's start to the first step's
  result: its compilation, or its load from the compilation cache, and its first batch)."""
  loop_start = time.time()
  batches = par.batches(task.train_batches(host_batch, config.seed, start))
  pending, fetched, timer, clips_since = [], [], time.time(), 0
  total = config.num_train_steps
  with StopSignals() as signals, console.Progress(total, start) as progress:
    for number in range(start + 1, total + 1):
      state, metrics = train_step(state, next(batches))
      if number == start + 1:
        jax.block_until_ready(metrics)
        first_step_s = round(time.time() - loop_start, 2)
      pending.append(metrics)
      clips_since += config.input.batch_size
      if on_step:
        on_step(number)
      progress.finished(_last_finished(pending, number))
      stop = signals.received is not None or ckpt.preempted(number)
      log = stop or number == total or number % config.log_every == 0
      if log or ckpt.save_due(number, force=stop or number == total):  # no save or log after a non-finite step
        fetched += [par.to_host(m, REPLICATED) for m in pending]
        pending = []
        bad = [number - len(fetched) + 1 + i for i, m in enumerate(fetched) if not m["finite"]]
        if bad:
          ckpt.wait()
          raise NonFiniteLoss(f"non-finite loss or gradient at step {bad[0]}; training stopped; the last good "
                              f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept")
        progress.finished(number)
      if log:  # one record per log_every steps (checkpoint steps do not split the average)
        rate = clips_since / max(time.time() - timer, 1e-9)
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "finite"}
        writer.write(number, {**means, "clips_per_s": rate})
        progress.finished(number, loss=f"{means['loss']:.4f}")
        fetched, timer, clips_since = [], time.time(), 0
      ckpt.maybe_save(number, par.get_state(state), force=stop or number == total)
      if stop:
        ckpt.wait()
        raise Interrupted(number, ckpt.directory)
  ckpt.wait()
  return state, first_step_s


class StopRequested(BaseException):
  """A stop signal (`StopSignals(at_once=True)`): a BaseException, like KeyboardInterrupt, so that no
  `except Exception` on the way swallows it."""


class StopSignals:
  """While active, a first SIGTERM/SIGINT is recorded (`received`) instead of killing the process, with a
  warning saying what happens `then`: in training the loop saves a checkpoint and raises `Interrupted`;
  while the run's files are written, they are finished. With `at_once` (evaluation, which has nothing to
  save) it raises `StopRequested` where the program is. A second signal acts as the previous handler
  would; previous handlers are restored on exit. A no-op outside the main thread, and with several JAX
  processes, where JAX's preemption service owns SIGTERM: orbax's preemption sync point
  (`Checkpointer.preempted`) makes every host save the same step and stop, and a signal during
  evaluation lets it finish."""

  def __init__(self, at_once: bool = False, then: str = "saving a checkpoint and stopping"):
    self.received: int | None = None
    self._at_once, self._then = at_once, then
    self._previous: dict = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
      for s in STOP_SIGNALS:
        signal.signal(s, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    if self.received is None:
      self.received = signum
      if self._at_once:
        raise StopRequested(signum)
      logging.warning("%s received: %s.", signal.Signals(signum).name, self._then)
      return
    previous = self._previous[signum]
    if callable(previous):
      previous(signum, frame)
    elif previous != signal.SIG_IGN:  # SIG_DFL (or unknown): restore it and let the signal act
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)

  def __exit__(self, *exc: Any) -> None:
    for s, previous in self._previous.items():
      signal.signal(s, previous if previous is not None else signal.SIG_DFL)


def _last_finished(pending: list, number: int) -> int:
  """The newest step whose metrics have been computed (without waiting); `pending` ends with step `number`'s."""
  for back, metrics in enumerate(reversed(pending)):
    if all(leaf.is_ready() for leaf in jax.tree.leaves(metrics)):
      return number - back
  return number - len(pending)


def _write_report(workdir: str, config, task, summary: dict, evaluations: list[eval_base.Evaluation]) -> None:
  """report.md: the summary table, training curves, then each evaluator's sections."""
  page = report.Report(workdir, f"{config.job} run: {os.path.basename(os.path.abspath(workdir))}")
  page.add_table("Test metrics", summary)
  if config.init_from:
    how = "evaluated as they are" if config.eval_only else "then trained"
    page.add_text("Initial weights", f"From `{config.init_from}`, {how}.")
  if task.curve_keys:
    page.add_curves("Training curves", writers.read_metrics(workdir), list(task.curve_keys), split="train")
  for evaluation in evaluations:
    if evaluation.report is not None:
      evaluation.report(page)
  page.write()
