"""Training system: 1 vs 4 devices under both wrappers, resume after SIGTERM, eval-only, NaN stop, CLI errors,
run files.

Runs of one config compile the same programs; the suite's persistent compilation cache (conftest) compiles
each once, however many runs use it.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import crash
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from device_steps import max_abs_diff, steps_per_layout

from fmjax.checkpoints import restore as restore_lib
from fmjax.checkpoints.state import TrainState
from fmjax.evals import base as eval_base
from fmjax.models import fmformer as fmformer_model
from fmjax.runtime import errors, locks
from fmjax.train import loop, optim, writers
from fmjax.train.tasks import fmformer as fmformer_task

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METRICS = ("acc", "f1", "fdr", "mdr", "precision", "recall", "steps")


@pytest.fixture(scope="module")
def make_config(tiny_job):
  def make(variants: str = "tiny", **overrides) -> ml_collections.ConfigDict:
    """`configs/fmformer.py:<variants>` on the shared tiny furnace, one device, top-level keys overridden."""
    return tiny_job("fmformer", variants, **overrides)
  return make


def seg_config(make_config) -> ml_collections.ConfigDict:
  """The tiny segmentation config, trained with plain SGD at lr 1 from the first step.

  One AdamW step moves each parameter by about lr * sign(gradient), so parameters whose gradient is
  rounding noise around 0 differ by up to 2 lr between device counts; an SGD step at lr 1 moves them
  by the (clipped) gradient itself, so comparing parameters compares the synchronised gradients.
  """
  config = make_config("tiny,seg", num_train_steps=2)
  config.optimizer.update(name="sgd", lr=1.0, warmup_steps=0)
  return config


def checkpoint_steps(workdir: str) -> list[int]:
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())


def restore(workdir: str, config, step: int | None = None) -> TrainState:
  """A run's checkpoint (default: the latest) as a host TrainState; the target comes from `eval_shape`."""
  model = fmformer_model.Model(**config.model)
  tx, _ = optim.make(config.optimizer, config.num_train_steps)
  size, frames, seconds = config.model.image_size, config.input.num_frames, config.input.current_seconds
  video = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.uint8)
  current = jax.ShapeDtypeStruct((1, 2 * seconds, 3), jnp.float32)
  shapes = jax.eval_shape(lambda rng, v, c: TrainState.create(model.init(rng, video=v, current=c), tx),
                          jax.random.PRNGKey(0), video, current)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
  return jax.tree.map(np.asarray, restore_lib.restore_from(os.path.join(workdir, "checkpoints"), target, step))


def train_records(workdir: str) -> list[dict]:
  return [r for r in writers.read_metrics(workdir) if r["split"] == "train"]


# ------------------------------------------------------------------------------------------- 1 vs 4 devices


@pytest.fixture(scope="module")
def one_step(make_config, four_devices):
  """Initial host state and the host state after one step on a fixed batch of 8, per (wrapper, devices)."""
  config = seg_config(make_config)
  task = fmformer_task.Task.prepare(config)
  return steps_per_layout(task, config, [next(iter(task.train_batches(8, config.seed, 0)))])


@pytest.mark.parametrize("a, b", [(("shard_map", 1), ("shard_map", 4)), (("pmap", 1), ("pmap", 4)),
                                  (("shard_map", 4), ("pmap", 4))])
def test_one_step_same_parameters_and_batch_stats(one_step, a, b):
  init, after = one_step
  (state_a, metrics_a), (state_b, metrics_b) = after[a], after[b]
  assert int(state_a.step) == int(state_b.step) == 1
  assert metrics_a["finite"] and metrics_b["finite"]
  assert metrics_a["loss"] == pytest.approx(metrics_b["loss"], abs=1e-5)
  step_size = max_abs_diff(state_a.params, init.params)
  assert step_size > 1e-4  # the step did move the parameters
  # the same step but for float32 sums taken in another order: measured 4.5e-5 of the step's largest change
  # on the tiny furnace (0.28); a gradient averaged over one device's shard only is off by a good part of it
  assert max_abs_diff(state_a.params, state_b.params) <= 1e-4 * step_size
  stats_a, stats_b = state_a.model_state["batch_stats"], state_b.model_state["batch_stats"]
  assert jax.tree.leaves(stats_a)  # the segmentation head's synchronised BatchNorms
  assert max_abs_diff(stats_a, init.model_state["batch_stats"]) > 1e-3
  assert max_abs_diff(stats_a, stats_b) <= 1e-5


# ------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def run_a(fmformer_run):
  """The uninterrupted tiny run: 6 steps, checkpoints every 3."""
  return fmformer_run


@pytest.fixture(scope="module")
def run_b(make_config, tmp_path_factory):
  """The same run killed by SIGTERM after step 4, then rerun."""
  workdir = str(tmp_path_factory.mktemp("run_b"))
  kill_at_4 = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 4 else None
  with pytest.raises(loop.Interrupted) as interrupted:
    loop.train_and_evaluate(make_config(), workdir, on_step=kill_at_4)
  steps_after_kill = checkpoint_steps(workdir)
  summary = loop.train_and_evaluate(make_config(), workdir)
  return workdir, interrupted.value, steps_after_kill, summary


@pytest.fixture(scope="module")
def seg_run(make_config, tmp_path_factory):
  """A 2-step tiny segmentation run."""
  workdir = str(tmp_path_factory.mktemp("seg_run"))
  return workdir, loop.train_and_evaluate(seg_config(make_config), workdir)


def test_resumed_run_ends_like_an_uninterrupted_one(make_config, run_a, run_b):
  (workdir_a, summary_a), (workdir_b, interrupted, steps_after_kill, summary_b) = run_a, run_b
  assert interrupted.step == 4 and steps_after_kill == [3, 4]
  assert checkpoint_steps(workdir_a) == [3, 6] and checkpoint_steps(workdir_b) == [3, 4, 6]
  assert summary_a["steps"] == summary_b["steps"] == 6
  for key in METRICS:
    assert summary_b[key] == pytest.approx(summary_a[key], abs=1e-6), key
  final_a, final_b = restore(workdir_a, make_config()), restore(workdir_b, make_config())
  assert int(final_a.step) == int(final_b.step) == 6
  assert max_abs_diff(final_a.params, final_b.params) <= 1e-6
  records_a, records_b = train_records(workdir_a), train_records(workdir_b)
  assert [r["step"] for r in records_a] == [r["step"] for r in records_b] == [2, 4, 6]
  for ra, rb in zip(records_a, records_b):
    for key in ("loss", "accuracy", "grad_norm", "lr"):
      assert rb[key] == pytest.approx(ra[key], abs=1e-6), (rb["step"], key)


# ------------------------------------------------------------------------------------------- eval only


def test_eval_only_reevaluates_a_run_without_training(make_config, run_a, tmp_path):
  workdir, summary = str(tmp_path / "run_a"), run_a[1]
  shutil.copytree(run_a[0], workdir)  # the shared run stays as it finished
  records = train_records(workdir)
  again = loop.train_and_evaluate(make_config(eval_only=True), workdir)
  for key in METRICS:
    assert again[key] == pytest.approx(summary[key], abs=1e-6), key
  assert checkpoint_steps(workdir) == [3, 6]
  assert train_records(workdir) == records


def test_eval_only_from_another_workdir(make_config, run_a, tmp_path):
  workdir, summary = run_a
  fresh = loop.train_and_evaluate(make_config(eval_only=True, init_from=workdir), str(tmp_path))
  for key in ("acc", "f1", "fdr", "mdr"):
    assert fresh[key] == pytest.approx(summary[key], abs=1e-6), key


def test_eval_only_with_nothing_to_evaluate(make_config, tmp_path):
  with pytest.raises(ValueError, match="nothing to evaluate"):
    loop.train_and_evaluate(make_config(eval_only=True), str(tmp_path))


@pytest.mark.parametrize("count", [-1, 5])
def test_num_devices_beyond_the_devices_is_a_config_error(make_config, tmp_path, count):
  with pytest.raises(ValueError, match=rf"num_devices={count}: choose 0 \(every device\) or 1\.\.4"):
    loop.train_and_evaluate(make_config(num_devices=count), str(tmp_path))


def test_num_devices_chooses_the_first_devices(make_config, four_devices):
  """The trainer's devices for num_devices 1, 2 and 0 (every one): device ids 0, 0-1, 0-3."""
  for count, ids in ((1, [0]), (2, [0, 1]), (0, [0, 1, 2, 3])):
    par, _ = loop.devices_and_task(make_config(num_devices=count))
    assert [d.id for d in par.devices] == ids and par.num_devices == len(ids)


def test_init_from_a_different_model_or_nowhere(make_config, seg_run, tmp_path):
  seg_workdir, _ = seg_run
  with pytest.raises(errors.CheckpointError, match="does not match") as error:
    loop.train_and_evaluate(make_config(eval_only=True, init_from=seg_workdir), str(tmp_path / "a"))
  assert seg_workdir in str(error.value) and "params." in str(error.value)  # names the mismatched weights
  missing = str(tmp_path / "missing")
  with pytest.raises(errors.CheckpointError, match="no checkpoint directory") as error:
    loop.train_and_evaluate(make_config(eval_only=True, init_from=missing), str(tmp_path / "b"))
  assert missing in str(error.value)


# ------------------------------------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(make_config, run_a, tmp_path, monkeypatch):
  original = fmformer_task.Task.train_batches

  def poisoned(self, host_batch, seed, start_step):
    for step, batch in enumerate(original(self, host_batch, seed, start_step), start_step + 1):
      yield {**batch, "current": np.full_like(batch["current"], np.nan)} if step >= 5 else batch

  monkeypatch.setattr(fmformer_task.Task, "train_batches", poisoned)
  workdir = str(tmp_path)
  with pytest.raises(loop.NonFiniteLoss) as error:
    loop.train_and_evaluate(make_config(checkpoint_every=3, log_every=2), workdir)
  assert "step 5" in str(error.value) and "step 3" in str(error.value)
  assert checkpoint_steps(workdir) == [3]
  kept = restore(workdir, make_config())
  assert int(kept.step) == 3
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(kept.params))
  assert max_abs_diff(kept.params, restore(run_a[0], make_config(), step=3).params) <= 1e-6
  assert [r["step"] for r in train_records(workdir)] == [2, 4]


# ------------------------------------------------------------------------------------------- CLI


def run_cli(tiny_root: str, data_dir: str, workdir: str, *overrides: str) -> subprocess.CompletedProcess:
  command = [sys.executable, os.path.join(REPO, "launch", "main.py"), "--config=configs/fmformer.py:tiny",
             f"--workdir={workdir}", f"--config.data.root={tiny_root}", f"--config.data.data_dir={data_dir}",
             *overrides]
  return subprocess.run(command, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                        text=True, timeout=120, check=False)


@pytest.mark.parametrize("override", ["--config.model.patch_size=7", "--config.input.num_frames=5"])
def test_cli_bad_geometry_is_one_error_line(tiny_root, data_dir, tmp_path, override):
  result = run_cli(tiny_root, data_dir, str(tmp_path), override)
  assert result.returncode == 1, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "not divisible" in last, result.stderr
  assert "Traceback" not in result.stderr


def test_cli_unknown_key_is_one_error_line(tiny_root, data_dir, tmp_path):
  result = run_cli(tiny_root, data_dir, str(tmp_path), "--config.model.nonexistent=1")
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error:") and "nonexistent" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------- run files


@pytest.mark.parametrize("run, extra", [("run_a", ()), ("seg_run", ("miou",))])
def test_run_files(request, run, extra):
  workdir, _ = request.getfixturevalue(run)
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert set(("acc", "f1", "fdr", "mdr", "fps", "steps", "wall_s") + extra) <= set(summary)
  assert 0.0 <= summary["acc"] <= 1.0 and summary["fps"] > 0 and summary["wall_s"] > 0
  assert all(0.0 <= summary[key] <= 1.0 for key in extra)
  with open(os.path.join(workdir, "report.md"), encoding="utf-8") as f:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", f.read())
  assert links and all(os.path.isfile(os.path.join(workdir, link)) for link in links), links
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tb")))


def test_a_resumed_run_does_not_read_init_from_again(make_config, run_a, tmp_path):
  """init_from gives a run its first weights; once the run has checkpoints, resuming reads those alone (the
  source may be gone by then)."""
  first = loop.train_and_evaluate(make_config(init_from=run_a[0], num_train_steps=3), str(tmp_path))
  again = loop.train_and_evaluate(make_config(init_from=str(tmp_path / "gone"), num_train_steps=3), str(tmp_path))
  assert again["acc"] == first["acc"] and again["steps"] == 3


def test_init_from_a_run_trained_with_another_optimiser(make_config, seg_run, tmp_path):
  # seg_run trained with SGD; this AdamW config takes its weights (the optimiser starts afresh).
  seg_workdir, summary = seg_run
  fresh = loop.train_and_evaluate(make_config("tiny,seg", eval_only=True, init_from=seg_workdir), str(tmp_path))
  for key in ("miou", "acc", "f1"):
    assert fresh[key] == pytest.approx(summary[key], abs=1e-6), key


# ------------------------------------------------------------------------------------------- the user's path


def test_relative_paths_for_workdir_data_resume_and_init_from(make_config, run_a, tiny_root, tmp_path, monkeypatch):
  """Every path relative to the current directory (or under ~): train half, resume, evaluate elsewhere."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  relative_root = os.path.relpath(tiny_root, tmp_path)
  config = lambda **overrides: _relative(make_config(**overrides), relative_root)
  half = loop.train_and_evaluate(config(num_train_steps=3), "runs/rel")
  assert half["steps"] == 3 and os.path.isfile(tmp_path / "runs" / "rel" / "summary.json")
  assert checkpoint_steps(str(tmp_path / "runs" / "rel")) == [3]
  summary = loop.train_and_evaluate(config(), "runs/rel")  # resumes from step 3
  for key in METRICS:
    assert summary[key] == pytest.approx(run_a[1][key], abs=1e-6), key
  assert os.path.isdir(tmp_path / "rel_cache")  # data.data_dir was relative too
  again = loop.train_and_evaluate(config(eval_only=True, init_from="runs/rel"), "~/evaluated")
  assert os.path.isfile(tmp_path / "home" / "evaluated" / "summary.json")
  for key in ("acc", "f1", "fdr", "mdr"):
    assert again[key] == pytest.approx(run_a[1][key], abs=1e-6), key


def _relative(config, relative_root: str):
  config.data.root, config.data.data_dir = relative_root, "rel_cache"
  return config


@pytest.mark.slow
def test_killed_any_time_the_cli_resumes_to_the_same_summary(run_a, tiny_root, data_dir, cli_env, tmp_path):
  """SIGKILL after a checkpoint and during a save, a damaged latest step, no intact step, restart: via the CLI,
  with the default (relative) workdir; every finished run ends with the uninterrupted run's metrics."""
  flags = (f"--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny",
           f"--config.data.root={os.path.relpath(tiny_root, tmp_path)}", f"--config.data.data_dir={data_dir}",
           "--config.num_devices=1")  # as run_a: the same numbers, and the run's compilation cache
  checkpoints = tmp_path / "runs" / "fmformer_tiny" / "checkpoints"
  expected = {key: run_a[1][key] for key in METRICS}

  def finished_like_run_a(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with open(checkpoints.parent / "summary.json", encoding="utf-8") as f:
      summary = json.load(f)
    assert {key: pytest.approx(summary[key], abs=1e-6) for key in METRICS} == expected

  killed = crash.run_cli(tmp_path, cli_env, *flags, kill="4:step")
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert checkpoint_steps(str(checkpoints.parent)) == [3]
  assert locks.holder(str(checkpoints.parent / loop.LOCK_FILE)).startswith("pid ")  # it held the workdir: the
  # lock died with it, so the reruns below go on
  killed = crash.run_cli(tmp_path, cli_env, *flags, kill="6:save")
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  unfinished = [name for name in os.listdir(checkpoints) if name.startswith("6.orbax-checkpoint-tmp")]
  assert unfinished and checkpoint_steps(str(checkpoints.parent)) == [3], os.listdir(checkpoints)
  resumed = crash.run_cli(tmp_path, cli_env, *flags)
  finished_like_run_a(resumed)
  assert f"checkpoint {checkpoints / unfinished[0]}: an unfinished save" in resumed.stderr
  assert f"resuming from step 3 of {checkpoints}" in resumed.stderr

  crash.truncate_largest_array_file(checkpoints / "6", 100)  # the latest step is damaged: an array file cut short
  resumed = crash.run_cli(tmp_path, cli_env, *flags)
  finished_like_run_a(resumed)
  damaged = [line for line in resumed.stderr.splitlines() if " is damaged" in line]
  assert len(damaged) == 1 and damaged[0].startswith(f"checkpoint {checkpoints / '6'} is damaged"), resumed.stderr
  assert f"resuming from step 3 of {checkpoints}" in resumed.stderr

  for step in ("3", "6"):
    os.remove(os.path.join(checkpoints, step, "default", "_METADATA"))
  stopped = crash.run_cli(tmp_path, cli_env, *flags)
  assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
  last = stopped.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: no intact checkpoint in {checkpoints}") and "restart=True" in last, last
  finished_like_run_a(crash.run_cli(tmp_path, cli_env, *flags, "--config.restart=True"))
  assert [name for name in os.listdir(checkpoints.parent) if name.startswith("checkpoints.replaced-")]


def cli_flags(data_dir: str, workdir: str) -> tuple[str, ...]:
  """The command line of `run_a`'s config (one device: the same numbers, and the session's compilation cache)."""
  return (f"--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", "--config.num_devices=1")


REFUSE_READS = """import builtins, errno, os
_prefix, _open = os.environ["FMJAX_REFUSE_READS"], builtins.open
def _refusing(file, *args, **kwargs):
  if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(_prefix):
    raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
  return _open(file, *args, **kwargs)
builtins.open = _refusing
"""


@pytest.mark.slow
def test_cli_a_checkpoint_that_cannot_be_read_now_stops_the_resume_and_moves_nothing(run_a, data_dir, cli_env,
                                                                                      tmp_path):
  """Python's reads of the newest step's files refused (a sitecustomize on PYTHONPATH): one `error:` line, the
  step stays where it is; once readable, the run resumes from it."""
  workdir = tmp_path / "run"
  shutil.copytree(run_a[0], workdir)
  checkpoints = workdir / "checkpoints"
  shim = tmp_path / "shim"
  shim.mkdir()
  (shim / "sitecustomize.py").write_text(REFUSE_READS)
  flags = cli_flags(data_dir, str(workdir))
  refusing = {**cli_env, "FMJAX_REFUSE_READS": f"{checkpoints / '6'}{os.sep}",
              "PYTHONPATH": os.pathsep.join([str(shim), REPO, cli_env.get("PYTHONPATH", "")])}
  stopped = crash.run_cli(tmp_path, refusing, *flags)
  assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
  assert stopped.stderr.strip().splitlines()[-1] == (
      f"error: checkpoint {checkpoints / '6'} cannot be read now (Permission denied); nothing was moved; fix the "
      "access (permissions, the filesystem or its mount) and rerun"), stopped.stderr
  assert checkpoint_steps(str(workdir)) == [3, 6] and not os.path.exists(f"{checkpoints}.damaged")
  resumed = crash.run_cli(tmp_path, cli_env, *flags)
  assert resumed.returncode == 0 and f"resuming from step 6 of {checkpoints}" in resumed.stderr, resumed.stderr


def test_cli_a_second_run_in_a_busy_workdir_stops_at_once(run_a, data_dir, cli_env, tmp_path):
  """The same command twice in one workdir (and once more with restart=True): the second stops before any work
  with one error line naming the first (pid and host), setting nothing aside; the first, held after step 3
  meanwhile, ends as an uninterrupted run, one writer."""
  workdir, go = tmp_path / "run", str(tmp_path / "go")
  first = crash.start_paused(tmp_path, cli_env, go, "3", *cli_flags(data_dir, "run"))
  try:
    seconds = [crash.run_cli(tmp_path, cli_env, *cli_flags(data_dir, "run"), *extra)
               for extra in ((), ("--config.restart=True",))]
    left = sorted(os.listdir(workdir))
  finally:
    code, log = crash.resume_paused(first, go)
  for second in seconds:
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"error: workdir {workdir} is in use by another run (pid {first.pid} on host {socket.gethostname()}); wait "
        "for it to end or stop it, or give this run another --workdir"], second.stderr
  assert "checkpoints" in left and not [name for name in left if name.startswith("checkpoints.replaced")], left
  assert code == 0, log[-3000:]
  with open(workdir / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  assert {key: summary[key] for key in METRICS} == pytest.approx({key: run_a[1][key] for key in METRICS}, abs=1e-6)
  assert [r["step"] for r in train_records(str(workdir))] == [r["step"] for r in train_records(run_a[0])]


@pytest.mark.slow
def test_cli_a_signal_during_evaluation_writes_nothing_and_the_rerun_evaluates(run_a, data_dir, cli_env, tmp_path):
  """SIGTERM as the evaluation begins in a finished run's workdir: one 'stopped:' line, exit status 1, the
  checkpoints and the old summary.json/report.md untouched; the same command again evaluates (no training),
  and a SIGTERM while it writes the report lets it finish its files."""
  workdir = tmp_path / "run"
  shutil.copytree(run_a[0], workdir)
  kept = {name: (workdir / name).read_bytes() for name in ("summary.json", "report.md", "metrics.jsonl")}
  stopped = crash.run_cli(tmp_path, cli_env, *cli_flags(data_dir, "run"), kill="classification:eval")
  assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
  assert stopped.stderr.strip().splitlines()[-1] == (
      f"stopped: interrupted during evaluation classification; no summary was written; the checkpoint (step 6) in "
      f"{workdir / 'checkpoints'} is intact; rerun the same command to evaluate again")
  assert {name: (workdir / name).read_bytes() for name in kept} == kept
  assert checkpoint_steps(str(workdir)) == [3, 6]
  (workdir / "report.md").unlink()
  again = crash.run_cli(tmp_path, cli_env, *cli_flags(data_dir, "run"), kill="report:write")
  assert again.returncode == 0, again.stderr
  assert "training:" not in again.stderr and "evaluating: classification" in again.stderr
  assert "SIGTERM received: finishing summary.json and report.md first." in again.stderr
  assert (workdir / "report.md").read_text().count("![") == kept["report.md"].decode().count("![")
  with open(workdir / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  assert {key: summary[key] for key in METRICS} == pytest.approx({key: run_a[1][key] for key in METRICS}, abs=1e-6)
  assert [r["step"] for r in train_records(str(workdir))] == [r["step"] for r in train_records(run_a[0])]


@pytest.mark.slow
def test_two_runs_on_a_fresh_data_dir_make_its_data_once(cli_env, tmp_path):
  """Two runs in two workdirs share a fresh data dir: the second waits for the first's generation (the line
  names the first and what it does), then finds the data made; both finish with the same figures."""
  data, go = tmp_path / "data", str(tmp_path / "go")
  env = {**cli_env, "FMJAX_DATA_DIR": str(data)}
  first = crash.start_paused(tmp_path, env, go, "generate", *cli_flags(str(data), "a"))
  with open(tmp_path / "b.log", "w") as log:
    second = subprocess.Popen([sys.executable, os.path.join(REPO, "launch", "main.py"), *cli_flags(str(data), "b")],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
  try:
    while "waiting for" not in (tmp_path / "b.log").read_text() and second.poll() is None:
      time.sleep(0.1)
  finally:
    code, log_a = crash.resume_paused(first, go)
  assert (code, second.wait(timeout=300)) == (0, 0), log_a[-2000:] + (tmp_path / "b.log").read_text()[-2000:]
  log_b = (tmp_path / "b.log").read_text()
  [root] = [os.path.join(data, "synthetic", name) for name in os.listdir(data / "synthetic") if "." not in name]
  assert f"waiting for pid {first.pid} on host {socket.gethostname()}, which is generating the synthetic furnace " \
         f"into {root} (lock {root}.lock)" in log_b
  both = log_a + log_b
  assert both.count("generating the synthetic furnace (") == 1 and both.count(f"preparing {root} (") == 1, both
  summaries = [json.loads((tmp_path / w / "summary.json").read_text()) for w in ("a", "b")]
  assert {key: summaries[0][key] for key in METRICS} == {key: summaries[1][key] for key in METRICS}


def test_cli_unwritable_workdir_fails_before_any_work(tiny_root, cli_env, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  fresh_data = tmp_path / "data"
  result = crash.run_cli(tmp_path, cli_env, f"--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny",
                        "--workdir=a_file/run", f"--config.data.data_dir={fresh_data}")
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines() == [f"error: workdir {blocker}/run cannot be created or written: "
                                                f"Not a directory"], result.stderr
  assert not fresh_data.exists()  # no furnace was generated


def _main_with(tmp_path, run_source: str) -> subprocess.CompletedProcess:
  """launch/main.py (a tiny FmFormer config, workdir `w` in `tmp_path`) with the trainer replaced by the `run`
  that `run_source` defines: what the command line makes of what `run` raises."""
  program = (f"import runpy, sys; from fmjax.train import loop\n{run_source}loop.train_and_evaluate = run\n"
             f"sys.argv = ['main.py', '--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny', '--workdir=w']\n"
             f"runpy.run_path({os.path.join(REPO, 'launch', 'main.py')!r}, run_name='__main__')\n")
  return subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_keeps_the_traceback_of_a_bug(tmp_path):
  """Only fmjax's user errors become one line; any other exception (here a ValueError) is a bug to see whole."""
  result = _main_with(tmp_path, "def run(config, workdir): raise ValueError('shapes (3,) and (4,) do not broadcast')\n")
  assert result.returncode == 1
  assert "Traceback" in result.stderr and "ValueError: shapes (3,) and (4,) do not broadcast" in result.stderr
  assert "error: shapes" not in result.stderr


def test_cli_a_full_disk_below_a_library_is_one_error_line(tmp_path):
  """An exception that a library raised from a full disk (tensorstore's ValueError here) is the machine's, not a
  bug: one `error:` line naming the folder of the file it could not write."""
  result = _main_with(tmp_path, "import errno, os\n"
                                "def run(config, workdir):\n"
                                "  try:\n"
                                "    where = os.path.join(workdir, 'x', 'f.bin')\n"
                                "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)\n"
                                "  except OSError as e:\n"
                                "    raise ValueError('RESOURCE_EXHAUSTED: Error writing f.bin') from e\n")
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'w' / 'x'}: no space left on device while writing f.bin ("), result.stderr


def test_eval_subset_is_spread_over_the_split_with_a_steady_bar(make_config, run_a, tmp_path, capfd):
  workdir = run_a[0]
  config = make_config(eval_only=True, init_from=workdir)
  config.evals.classification.update(stride=1, max_clips=40)
  task = fmformer_task.Task.prepare(config)
  evaluator = eval_base.build("classification", config.evals.classification, loop.eval_context(task))
  whole, subset = task.data.split("test"), evaluator.samples()
  assert len(subset) == 40 and set(subset[:, 0]) == set(whole[:, 0])  # every recording, not the first only
  np.testing.assert_array_equal(subset[[0, -1]], whole[[0, -1]])
  capfd.readouterr()
  summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["eval_clips"] == 40
  bar = capfd.readouterr().err
  assert "evaluating: test" in bar and "3/3" in bar  # 40 clips in batches of 16, counted as they finish


def test_cli_ctrl_c_while_the_run_gets_ready_is_one_line(tmp_path, cli_env):
  """Ctrl-C before training (here while the data dir's lock is held to generate the furnace): one 'stopped:'
  line, exit status 1, no traceback, and no half-generated furnace left in the data dir."""
  data, go = tmp_path / "fresh_data", str(tmp_path / "go")
  flags = (f"--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny", "--workdir=run",
           f"--config.data.data_dir={data}")
  held = crash.start_paused(tmp_path, cli_env, go, "generate", *flags)
  held.send_signal(signal.SIGINT)
  code, log = held.wait(timeout=60), open(f"{go}.log").read()
  assert code == 1 and "Traceback" not in log, log[-3000:]
  assert log.strip().splitlines()[-1].startswith(f"stopped: interrupted (Ctrl-C) while the run of {tmp_path / 'run'} "
                                                 "was getting ready"), log[-3000:]
  left = [os.path.relpath(os.path.join(d, n), data) for d, _, names in os.walk(data) for n in names]
  assert all(name.endswith(".lock") for name in left), left
