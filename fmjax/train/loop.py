"""The one trainer: `train_and_evaluate(config, workdir)` for every job (big_vision order).

mesh -> task and init -> restore (resume, or `init_from`) -> compiled, donated data-parallel step
-> loop driven by "is it time" checks (log, checkpoint, stop on signal or non-finite loss) ->
evaluation on the test split -> metrics.jsonl, TensorBoard, summary.json, report.md.
"""

import functools
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fmjax import console, errors, paths, report
from fmjax.train import checkpoint, initialize, optim, parallel, writers
from fmjax.train.parallel import AXIS, REPLICATED, SHARDED
from fmjax.train.state import TrainState


class Interrupted(Exception):
  """SIGTERM/SIGINT arrived: a checkpoint was saved at `step`; rerunning the command resumes."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"interrupted at step {step}; checkpoint saved in {directory}; rerun the same command to resume")
    self.step = step


NonFiniteLoss = errors.NonFiniteLoss


TASKS = {"fmformer": "fmjax.train.tasks.fmformer:FmFormerTask", "pretrain": "fmjax.train.tasks.pretrain:PretrainTask",
         "align": "fmjax.train.tasks.align:AlignTask"}
RUNNERS = {"transfer": "fmjax.train.tasks.transfer:run"}  # jobs with no training loop: run(config, workdir)


def _load(job: str, registry: dict[str, str]) -> Callable:
  """The object named for `job` (its module is imported only when that job runs)."""
  if job not in registry:
    raise errors.ConfigError(f"job={job!r} is not one of {sorted({**TASKS, **RUNNERS})}")
  module, name = registry[job].split(":")
  return getattr(importlib.import_module(module), name)


def task_class(job: str) -> Callable:
  return _load(job, TASKS)


def _mean_floats(tree: Any) -> Any:
  """pmean over AXIS of the floating-point leaves; integer leaves (counters) are equal everywhere already."""
  return jax.tree.map(lambda x: jax.lax.pmean(x, AXIS) if jnp.issubdtype(x.dtype, jnp.inexact) else x, tree)


def train_step(task, tx: optax.GradientTransformation, lr: optax.Schedule, seed: int, state: TrainState,
               batch: dict):
  """One device's step: gradients, metrics and model state averaged over AXIS; a non-finite
  loss or gradient leaves the whole state unchanged (and says so in `finite`). The task's loss gets
  a key that depends on the seed and step only, the same on every device."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (_, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
  grads, metrics, model_state = _mean_floats((grads, metrics, model_state))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state, model_state=model_state)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
  return new, {**metrics, "grad_norm": grad_norm, "lr": lr(state.step), "finite": finite}


def eval_step(task, variables: dict, batch: dict):
  predictions, confusion = task.predict(variables, batch)
  return predictions, jax.lax.psum(confusion, AXIS)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates, writes the run's files.

  Paths (`workdir` and the config's path keys) may be relative to the current directory or start
  with `~`; they are resolved here, once. The workdir must be writable before anything else happens.
  Returns the summary written to `<workdir>/summary.json`. `on_step(step)` is called after each
  step (tests use it to deliver a signal mid-run). Raises `Interrupted` after saving on a
  signal, `NonFiniteLoss` when training diverges, and other `fmjax.errors.UserError`s for bad input.
  """
  workdir, config = paths.resolve(workdir), paths.resolve_config(config)
  paths.ensure_writable_dir(workdir)
  if config.job in RUNNERS:
    return _load(config.job, RUNNERS)(config, workdir)
  start_time = time.time()
  checkpoints = os.path.join(workdir, "checkpoints")
  if config.eval_only and not config.init_from and not _has_checkpoint(checkpoints):
    raise errors.ConfigError(f"eval_only: {workdir} has no checkpoint and no init_from was given; nothing to evaluate")
  if config.get("restart") and not config.eval_only:
    checkpoint.set_aside(checkpoints)
  lead = jax.process_index() == 0
  par = parallel.DataParallel(config.parallel)
  par.check_batch_size(config.input.batch_size)
  par.check_batch_size(config.eval.batch_size)
  host_batch = config.input.batch_size // jax.process_count()
  task = task_class(config.job)(config)
  tx, lr = optim.make(config.optimizer, config.num_train_steps)

  example = next(iter(task.train_batches(host_batch, config.seed, 0)))
  example = jax.tree.map(lambda x: x[:1], example)
  state = jax.jit(lambda rng: TrainState.create(task.init(rng, example), tx))(jax.random.PRNGKey(config.seed))
  if config.init_from:
    state = initialize.load_into(state, config.init_from)
    console.say(f"weights from {config.init_from}")
  ckpt = checkpoint.Checkpointer(checkpoints, every_steps=config.checkpoint_every, keep=config.keep_checkpoints,
                                 config_json=None if config.eval_only else config.to_json())
  with ckpt, writers.MetricWriter(workdir, enabled=lead) as writer:
    state, start = ckpt.restore_or_init(state)
    state = par.put_state(state)
    if not config.eval_only and start < config.num_train_steps:
      state = _train(config, task, par, ckpt, writer, state, start, host_batch, tx, lr, on_step)
    evaluate = getattr(task, "evaluate", None)
    if evaluate:
      console.say(f"evaluating on the {config.eval.split!r} split")
    else:
      evaluate = functools.partial(_evaluate, config, task)
    summary, samples = evaluate(par, state)
    summary.update(steps=int(par.get_state(state).step), wall_s=round(time.time() - start_time, 2),
                   peak_rss_mb=peak_rss_mb())
    if lead:
      writer.write(summary["steps"], {k: v for k, v in summary.items() if np.isscalar(v)}, split="test")
      with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
      _write_report(workdir, config, task, summary, samples)
  return summary


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def _has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _train(config, task, par, ckpt, writer, state, start: int, host_batch: int, tx, lr, on_step):
  step_fn = par.wrap(functools.partial(train_step, task, tx, lr, config.seed), (REPLICATED, SHARDED),
                     (REPLICATED, REPLICATED),
                     donate_argnums=(0,))
  batches = par.batches(task.train_batches(host_batch, config.seed, start))
  pending, fetched, timer, clips_since = [], [], time.time(), 0
  total = config.num_train_steps
  with ckpt.install_signal_handlers(), console.TrainingProgress(total, start) as progress:
    for step in range(start + 1, total + 1):
      state, metrics = step_fn(state, next(batches))
      pending.append(metrics)
      clips_since += config.input.batch_size
      if on_step:
        on_step(step)
      progress.finished(_last_finished(pending, step))
      stop = ckpt.stop_requested
      log = stop or step == total or step % config.log_every == 0
      if log or step % config.checkpoint_every == 0:  # a save must not keep a non-finite step
        fetched += [par.to_host(m, REPLICATED) for m in pending]
        pending = []
        bad = [step - len(fetched) + 1 + i for i, m in enumerate(fetched) if not m["finite"]]
        if bad:
          ckpt.wait()
          raise NonFiniteLoss(f"non-finite loss or gradient at step {bad[0]}; training stopped; the last good "
                              f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept")
        progress.finished(step)
      if log:  # one record per log_every steps (checkpoint steps do not split the average)
        rate = clips_since / max(time.time() - timer, 1e-9)
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0] if k != "finite"}
        writer.write(step, {**means, "clips_per_s": rate})
        progress.finished(step, loss=f"{means['loss']:.4f}")
        fetched, timer, clips_since = [], time.time(), 0
      ckpt.maybe_save(step, par.get_state(state), force=step == total)
      if stop:
        ckpt.wait()
        raise Interrupted(step, ckpt.directory)
  ckpt.wait()
  return state


def _last_finished(pending: list, step: int) -> int:
  """The newest step whose metrics have been computed (without waiting); `pending` ends with `step`'s."""
  for back, metrics in enumerate(reversed(pending)):
    if all(leaf.is_ready() for leaf in jax.tree.leaves(metrics)):
      return step - back
  return step - len(pending)


def _evaluate(config, task, par, state) -> tuple[dict[str, Any], dict]:
  """Classification tasks: official metrics on the test split, plus inference clips/s. (A task with
  its own `evaluate(par, state)` method is evaluated by that instead.)"""
  eval_fn = par.wrap(functools.partial(eval_step, task), (REPLICATED, SHARDED), (SHARDED, REPLICATED))
  variables = state.variables()
  host_batch = config.eval.batch_size // jax.process_count()
  keys, first = [], {}

  def fields():
    for device_fields, host_keys in task.eval_batches(config.eval.split, host_batch):
      keys.append(host_keys)
      first.setdefault("batch", device_fields)
      yield device_fields

  confusion, predictions, clips, count, timed_from = 0, [], 0, 0, None
  for n, batch in enumerate(console.bar(par.batches(fields()), phase="evaluating", unit="batch")):
    preds, conf = par.to_host(eval_fn(variables, batch), (SHARDED, REPLICATED))
    confusion = confusion + conf
    valid = par.to_host(batch["valid"], SHARDED)
    count += int(valid.sum())
    if n == 0 or task.keeps_all_predictions:  # masks of a whole test split would not fit in memory
      predictions.append(preds[valid])
    if n == 0:  # the first batch pays for compilation: time the rest
      timed_from = time.time()
    else:
      clips += int(valid.sum())
  if not keys:
    raise errors.ConfigError(f"the {config.eval.split!r} split is empty: nothing to evaluate")
  elapsed = time.time() - timed_from
  predictions = np.concatenate(predictions)
  keys = {k: np.concatenate([h[k] for h in keys]) for k in keys[0]}
  summary = task.summarize(np.asarray(confusion), predictions, keys)
  summary["fps"] = clips / elapsed if clips else None  # one batch only: its time is mostly compilation
  summary["eval_clips"] = count
  return summary, {"confusion": np.asarray(confusion), "predictions": predictions, "first": first.get("batch")}


def _write_report(workdir: str, config, task, summary: dict, samples: dict) -> None:
  """report.md: training curves, the summary table, then the task's own sections."""
  page = report.Report(workdir, f"{config.job} run: {os.path.basename(os.path.abspath(workdir))}")
  page.add_table("Test metrics", summary)
  history = writers.read_metrics(workdir)
  keys = getattr(task, "curve_keys", ("loss", "accuracy", "lr", "clips_per_s"))
  page.add_curves("Training curves", history, list(keys), split="train")
  task.add_report_sections(page, summary, samples)
  page.write()
