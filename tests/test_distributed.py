"""Joining a multi-process run: the settings are checked before JAX is asked to connect."""

import pytest

from fmjax import distributed, errors


@pytest.mark.parametrize("settings, message", [
    (dict(num_processes=2), "needs all of --coordinator_address"),
    (dict(coordinator_address="localhost:1", num_processes=2, process_id=2), "--process_id=2 is outside"),
    (dict(mode="off", coordinator_address="localhost:1", num_processes=2, process_id=0), "contradicts"),
    (dict(mode="always"), "is not one of"),
])
def test_bad_settings_are_one_line_errors(settings, message):
  with pytest.raises(errors.ConfigError, match=message):
    distributed.initialize(**settings)


def test_one_process_without_a_cluster(monkeypatch):
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("SLURM_NTASKS", "1")  # one SLURM task is one process
  assert not distributed.in_detected_cluster()
  assert distributed.initialize() is False
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.in_detected_cluster()
  monkeypatch.setenv("SLURM_NTASKS", "many")  # unreadable: not a sign
  assert not distributed.in_detected_cluster()
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1v-0,t1v-1")
  assert distributed.in_detected_cluster()


def test_one_process_needs_no_barrier_partner():
  calls = []
  assert distributed.first_then_others("nothing", lambda: calls.append(1) or 7) == 7 and calls == [1]
  distributed.barrier("alone", timeout_s=1)
  assert "process 0 of 1: 4 local of 4 cpu devices" in distributed.describe()
