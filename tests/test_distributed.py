"""Joining a multi-process run: the settings are checked before JAX is asked to connect; with --distributed=auto
JAX's own cluster detection decides (mocked here, and for real in a process with no cluster)."""

import os
import socket
import subprocess
import sys

import pytest

from fmjax.runtime import distributed, errors


@pytest.mark.parametrize("settings, message", [
    (dict(num_processes=2), "needs all of --coordinator_address"),
    (dict(coordinator_address="localhost:1", num_processes=2, process_id=2), "--process_id=2 is outside"),
    (dict(mode="off", coordinator_address="localhost:1", num_processes=2, process_id=0), "contradicts"),
    (dict(mode="always"), "is not one of"),
])
def test_bad_settings_are_one_line_errors(settings, message):
  with pytest.raises(errors.ConfigError, match=message):
    distributed.initialize(**settings)


@pytest.fixture
def no_cluster_signs(monkeypatch):
  for name in distributed._CLUSTER_SIGNS:
    monkeypatch.delenv(name, raising=False)


@pytest.fixture
def detection(monkeypatch):
  """JAX's cluster detection, mocked: set `outcome` to an exception to raise, or None to join; `calls` records."""
  state = {"outcome": None, "calls": []}

  def initialize(*args, **kwargs):
    state["calls"].append((args, kwargs))
    if state["outcome"] is not None:
      raise state["outcome"]
  monkeypatch.setattr(distributed.jax.distributed, "initialize", initialize)
  return state


def test_auto_lets_jax_decide_where_a_cluster_may_be(no_cluster_signs, detection, monkeypatch):
  """On a Cloud TPU VM (a pod slice sets none of the signs) or with a multi-process sign, JAX's detection decides;
  elsewhere, including a single-task SLURM job, the run is one process and JAX is not asked."""
  monkeypatch.setattr(distributed, "on_cloud_tpu_vm", lambda: False)
  monkeypatch.setenv("SLURM_NTASKS", "1")  # one SLURM task is one process (JAX would hide all GPUs but one)
  assert distributed.initialize("auto") is False and detection["calls"] == []
  monkeypatch.setattr(distributed, "on_cloud_tpu_vm", lambda: True)
  assert distributed.initialize("auto", heartbeat_timeout_s=7) is True
  assert detection["calls"] == [((), {"heartbeat_timeout_seconds": 7})]
  detection["outcome"] = ValueError("coordinator_address should be defined.")
  assert distributed.initialize("auto") is False  # a TPU VM JAX finds no pod for
  detection["outcome"] = RuntimeError("metadata server unreachable")
  assert distributed.initialize("auto") is False  # nor one whose metadata it cannot read: alone, with a notice
  assert distributed.initialize("off") is False and len(detection["calls"]) == 3  # off never asks JAX


def test_a_cluster_the_environment_shows_but_jax_cannot_find_or_join_is_an_error(no_cluster_signs, detection,
                                                                                 monkeypatch):
  monkeypatch.setattr(distributed, "on_cloud_tpu_vm", lambda: False)
  detection["outcome"] = ValueError("coordinator_address should be defined.")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  with pytest.raises(errors.ConfigError, match=r"one process of several \(SLURM_NTASKS=4\).*--distributed=off"):
    distributed.initialize("auto")
  detection["outcome"] = RuntimeError("Barrier timed out")
  with pytest.raises(errors.ConfigError, match=r"initialize\(\) failed .RuntimeError: Barrier timed out"):
    distributed.initialize("auto")


def test_a_machine_without_a_cluster_runs_alone_at_once(tmp_path):
  """In a fresh process with no cluster in its environment (and no TPU): one process, no network wait."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_",
                                                                    "KUBERNETES_", "JAX_COORDINATOR"))}
  code = ("import time; t = time.time(); from fmjax.runtime import distributed; "
          "joined = distributed.initialize('auto'); "
          "import jax; print(joined, jax.process_count(), round(time.time() - t, 1))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
  joined, count, seconds = out.stdout.split()
  assert (joined, count) == ("False", "1") and float(seconds) < 30, out.stdout
  assert not distributed.on_cloud_tpu_vm()


def test_one_process_needs_no_barrier_partner():
  calls = []
  assert distributed.first_then_others("nothing", lambda: calls.append(1) or 7) == 7 and calls == [1]
  distributed.barrier("alone", timeout_s=1)
  assert "process 0 of 1: 4 local of 4 cpu devices" in distributed.describe()


def free_slurm_job_id() -> int:
  """A SLURM job id whose coordinator port (JAX: 61440 + id mod 4096) is free here."""
  for port in range(61440 + os.getpid() % 4000, 65536):
    with socket.socket() as s:
      try:
        s.bind(("localhost", port))
      except OSError:
        continue
      return port - 61440 + 4096
  raise RuntimeError("no free port in JAX's SLURM range")


def test_two_slurm_tasks_join_through_jaxs_own_detection():
  """Two processes with a SLURM task's environment and no fmjax flag: JAX detects the cluster, they join as
  processes 0 and 1 of 2 and pass a barrier (fmjax's, through orbax's)."""
  code = ("from fmjax.runtime import distributed; joined = distributed.initialize('auto', heartbeat_timeout_s=20); "
          "import jax; distributed.first_then_others('ready', lambda: None, timeout_s=60); "
          "print(joined, jax.process_index(), jax.process_count())")
  base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_"))}
  job = str(free_slurm_job_id())
  runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**base, "SLURM_JOB_ID": job, "SLURM_NTASKS": "2", "SLURM_PROCID": str(i),
                                "SLURM_LOCALID": str(i), "SLURM_STEP_NODELIST": "localhost", "JAX_PLATFORMS": "cpu"})
          for i in range(2)]
  outputs = [run.communicate(timeout=120) for run in runs]
  assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
  assert sorted(out.split()[-3:] for out, _ in outputs) == [["True", "0", "2"], ["True", "1", "2"]]
