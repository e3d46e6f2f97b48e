"""Multi-host runs on JAX's distributed runtime: 2 processes x 2 CPU devices on localhost (gloo
collectives) against 1 process x 4 devices with the same global batch, through the command line.

Each job at tiny size must give the same final parameters (<= 1e-5) and the same summary.json
figures; the test splits do not divide evenly into global batches, so hosts pad their last ones. A
two-process run whose process 1 is SIGKILLed after a checkpoint: process 0 stops with JAX's error
within a bounded time instead of hanging, and rerunning both resumes to the uninterrupted result; the
same with process 0, the coordinator, killed. SIGTERM to one process saves one step on both and stops
both; a second run in a busy workdir stops on every process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(REPO, "launch", "main.py")
KILLED = os.path.join(REPO, "tests", "killed_run.py")
TIMINGS = {"wall_s", "peak_rss_mb", "fps", "first_step_s"}
JOBS = {"fmformer": "configs/fmformer.py:tiny", "pretrain": "configs/pretrain.py:tiny",
        "align": "configs/align.py:tiny"}
HEARTBEAT_S = 10
pytestmark = pytest.mark.slow  # 16 processes, each compiling its job: minutes


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def env_for(data_dir: str, devices: int) -> dict:
  """A CLI run's environment: `devices` CPU devices per process, the shared data dir, no compile cache."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
  return {**env, "JAX_PLATFORMS": "cpu", "FMJAX_DATA_DIR": data_dir,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"}


def start(config: str, workdir: str, data_dir: str, *, processes: int, kill: dict | None = None,
          flags: tuple[str, ...] = ()) -> list[subprocess.Popen]:
  """`processes` processes of launch/main.py (4 // processes devices each); `kill` maps a process to
  tests/killed_run.py's FMJAX_KILL moment ('pause' waits for the file `<workdir>.go`)."""
  port, kill = free_port(), kill or {}
  procs = []
  for i in range(processes):
    distributed = [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}", f"--process_id={i}",
                   f"--heartbeat_timeout_s={HEARTBEAT_S}"] if processes > 1 else []
    env = {**env_for(data_dir, 4 // processes), "FMJAX_KILL": kill.get(i, ""), "FMJAX_GO": f"{workdir}.go"}
    script = KILLED if i in kill else MAIN
    log = open(f"{workdir}.p{i}.log", "w")
    procs.append(subprocess.Popen([sys.executable, script, f"--config={config}", f"--workdir={workdir}",
                                   "--config.compile_cache=off", *distributed, *flags],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[int]:
  return [p.wait(timeout=timeout) for p in procs]


def run(config: str, workdir: str, data_dir: str, processes: int, flags: tuple[str, ...] = ()) -> dict:
  codes = finish(start(config, workdir, data_dir, processes=processes, flags=flags))
  logs = [open(f"{workdir}.p{i}.log").read() for i in range(processes)]
  assert codes == [0] * processes, "\n\n".join(log[-3000:] for log in logs)
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def saved_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def saved_state(workdir: str) -> dict:
  """The newest checkpoint of a run as numpy arrays."""
  directory = os.path.join(workdir, "checkpoints")
  step = saved_steps(workdir)[-1]
  path = os.path.join(directory, str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def assert_same_run(one: str, two: str, summary_one: dict, summary_two: dict) -> None:
  assert set(summary_one) == set(summary_two)
  for key in sorted(set(summary_one) - TIMINGS):
    a, b = summary_one[key], summary_two[key]
    if isinstance(a, float):
      assert b == pytest.approx(a, rel=1e-5, abs=1e-6, nan_ok=True), key
    else:
      assert a == b, key
  if saved_steps(one):  # a trained run (transfer trains nothing)
    state_one, state_two = saved_state(one), saved_state(two)
    assert jax.tree.structure(state_one) == jax.tree.structure(state_two)
    for a, b in zip(jax.tree.leaves(state_one), jax.tree.leaves(state_two)):
      np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """(base folder, data dir, finished(job, processes) -> (workdir, summary)): each uninterrupted run made once,
  when first asked for (the module's first run has two processes: process 0 alone makes the furnace)."""
  base = tmp_path_factory.mktemp("multiprocess")
  data_dir, done = str(base / "data"), {}

  def get(job: str, processes: int) -> tuple[str, dict]:
    if (job, processes) not in done:
      workdir = str(base / f"{job}_{processes}p")
      done[job, processes] = workdir, run(JOBS[job], workdir, data_dir, processes)
    return done[job, processes]
  return base, data_dir, get


@pytest.fixture(scope="module")
def runs(finished):
  """Every job at tiny size, once with 1 process x 4 devices and once with 2 processes x 2."""
  base, data_dir, get = finished
  return base, data_dir, {(job, processes): get(job, processes) for job in JOBS for processes in (2, 1)}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_two_processes_train_and_evaluate_as_one(runs, job):
  _, _, out = runs
  (one, summary_one), (two, summary_two) = out[job, 1], out[job, 2]
  assert_same_run(one, two, summary_one, summary_two)
  log = open(f"{two}.p1.log").read()
  assert "process 1 of 2: 2 local of 4 cpu devices" in log
  # process 1 wrote no file of its own: the two-process run holds the files the one-process run holds
  assert run_files(two) == run_files(one), set(run_files(two)) ^ set(run_files(one))


def run_files(workdir: str) -> list[str]:
  """The run's files and folders, checkpoints and TensorBoard events (named by host and time) left out."""
  skipped = (os.path.join(workdir, "checkpoints"), os.path.join(workdir, "tb"))
  return sorted(os.path.relpath(os.path.join(d, n), workdir) for d, dirs, files in os.walk(workdir)
                for n in dirs + files if not d.startswith(skipped))


def test_only_process_0_prepared_the_data_and_wrote_the_files(runs):
  base, _, out = runs
  two = out["fmformer", 2][0]
  logs = [open(f"{two}.p{i}.log").read() for i in range(2)]
  assert "generating the synthetic furnace" in logs[0].lower() or "preparing" in logs[0]
  assert "generating" not in logs[1].lower() and "preparing" not in logs[1]
  assert "wrote " in logs[0] and "wrote " not in logs[1]
  lines = open(os.path.join(two, "metrics.jsonl")).read().splitlines()
  assert len(lines) == len(set(lines))  # one writer: no record twice


def test_the_test_splits_do_not_divide_into_global_batches(runs):
  """The padding path is what these runs took: each split leaves a partial last global batch."""
  _, _, out = runs
  assert out["fmformer", 2][1]["eval_clips"] % 16  # :tiny evaluates in global batches of 16
  assert out["pretrain", 2][1]["eval_sequences"] % 16


def test_transfer_on_the_two_process_pretrain_run(runs):
  base, data_dir, out = runs
  source = out["pretrain", 2][0]
  flags = (f"--config.init_from={source}",)
  summaries = {p: run("configs/transfer.py:tiny", str(base / f"transfer_{p}p"), data_dir, p, flags) for p in (2, 1)}
  assert_same_run(str(base / "transfer_1p"), str(base / "transfer_2p"), summaries[1], summaries[2])


def test_a_dead_process_stops_the_other_and_the_run_resumes(runs):
  """Process 1 is SIGKILLed after step 4 (step 3's checkpoint on disk); process 0 stops with JAX's
  error within the heartbeat timeout and a margin; both rerun: resumed from step 3, same result."""
  base, data_dir, out = runs
  workdir = str(base / "fmformer_killed")
  began = time.time()
  procs = start(JOBS["fmformer"], workdir, data_dir, processes=2, kill={1: "4:step"})
  codes = finish(procs, timeout=300)
  took = time.time() - began
  log0 = open(f"{workdir}.p0.log").read()
  assert codes[1] == -signal.SIGKILL and codes[0] != 0, log0[-3000:]
  assert "JAX distributed service detected fatal errors" in log0
  assert took < 240
  resumed = run(JOBS["fmformer"], workdir, data_dir, 2)
  assert "resuming from step 3" in open(f"{workdir}.p0.log").read()
  two, uninterrupted = out["fmformer", 2]
  assert_same_run(two, workdir, uninterrupted, resumed)


def last_line(workdir: str, process: int) -> str:
  """A process's last line of its own: Gloo (JAX's CPU collectives) prints its connection notice from C++,
  unordered with Python's output, sometimes after it."""
  lines = open(f"{workdir}.p{process}.log").read().strip().splitlines()
  return [line for line in lines if not line.startswith("[Gloo]")][-1]


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_run_resumes(finished):
  """SIGTERM to process 1 after step 2: JAX's preemption sync point has both save the same step and stop (exit
  status 1, the 'stopped:' line); rerunning both resumes from that step to the uninterrupted result."""
  base, data_dir, get = finished
  two, uninterrupted = get("fmformer", 2)
  workdir = str(base / "fmformer_sigterm")
  codes = finish(start(JOBS["fmformer"], workdir, data_dir, processes=2, kill={1: "2:term"}), timeout=300)
  lines = [last_line(workdir, i) for i in range(2)]
  assert codes == [1, 1], lines
  step = saved_steps(workdir)[-1]
  assert 2 < step < 6 and lines == [f"stopped: interrupted at step {step}; checkpoint saved in "
                                    f"{workdir}/checkpoints; rerun the same command to resume"] * 2, lines
  resumed = run(JOBS["fmformer"], workdir, data_dir, 2)
  assert f"resuming from step {step}" in open(f"{workdir}.p0.log").read()
  assert_same_run(two, workdir, uninterrupted, resumed)


def test_a_dead_coordinator_stops_the_other(finished):
  """Process 0 (the coordinator) SIGKILLed after step 4: process 1 aborts with JAX's message within the heartbeat
  timeout (at once here: the coordinator's socket closes with it; a host that vanishes takes the timeout)."""
  base, data_dir, _ = finished
  workdir = str(base / "fmformer_dead_coordinator")
  procs = start(JOBS["fmformer"], workdir, data_dir, processes=2, kill={0: "4:step"})
  assert procs[0].wait(timeout=300) == -signal.SIGKILL
  died = time.time()
  assert procs[1].wait(timeout=HEARTBEAT_S + 30) == -signal.SIGABRT
  assert time.time() - died < HEARTBEAT_S + 5
  log = open(f"{workdir}.p1.log").read()
  assert "Terminating process because the JAX distributed service detected fatal errors" in log
  assert "Either the leader task was preempted/died/restarted unexpectedly" in log


def test_a_second_run_in_a_busy_workdir_stops_on_every_process(finished):
  """A two-process run held after step 3; the same commands again: every process of the second stops at once
  with the one error line (process 0 tells the others); the first then ends as an uninterrupted run."""
  base, data_dir, get = finished
  two, uninterrupted = get("fmformer", 2)
  workdir = str(base / "fmformer_busy")
  first = start(JOBS["fmformer"], workdir, data_dir, processes=2, kill={0: "3:pause", 1: "3:pause"})
  try:
    while not os.path.exists(f"{workdir}.go.paused"):
      assert all(p.poll() is None for p in first), open(f"{workdir}.p0.log").read()[-3000:]
      time.sleep(0.2)
    logs = {i: f"{workdir}.p{i}.log" for i in range(2)}
    for i, log in logs.items():
      os.replace(log, f"{workdir}.first.p{i}.log")  # the second run's logs take their names
    began = time.time()
    second = finish(start(JOBS["fmformer"], workdir, data_dir, processes=2), timeout=120)
    took = time.time() - began
    lines = [last_line(workdir, i) for i in range(2)]
  finally:
    open(f"{workdir}.go", "w").close()
  assert second == [1, 1] and took < 60, lines
  holder = open(os.path.join(workdir, ".fmjax.lock")).read().split()
  assert lines == [f"error: workdir {workdir} is in use by another run (pid {first[0].pid} on host {holder[1]}); "
                   "wait for it to end or stop it, or give this run another --workdir"] * 2
  assert finish(first) == [0, 0]
  with open(os.path.join(workdir, "summary.json")) as f:
    assert_same_run(two, workdir, uninterrupted, json.load(f))
