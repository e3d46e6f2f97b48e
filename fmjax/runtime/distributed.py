"""Joining a multi-process run on JAX's own distributed runtime, and what processes do in turn.

`initialize` calls `jax.distributed.initialize` with an explicit coordinator (a cluster of CPU or
GPU machines, or several processes on one machine), or, with `mode='auto'`, lets JAX's own cluster
detection find the cluster where there may be one: on a Cloud TPU VM (a pod slice's hosts find each
other through the TPU metadata) and where the environment shows several processes (SLURM, Open MPI,
GKE's TPU variables). Elsewhere (a laptop, one GPU machine, Colab's GPU, a single-task SLURM job) the
run is a single process, decided locally with no network wait: JAX's detection would also join a
one-process "cluster" there, and under SLURM that hides all GPUs but the task's local one. Once
joined, every process runs the same program on its own devices; `jax.process_index()` tells them
apart. `first_then_others` runs a preparation (the synthetic furnace, a real root's records) on
process 0 alone while the others wait at a barrier of the runtime (orbax's multihost barrier, with a
timeout), then on the others, which find it done. If a process dies, JAX's runtime stops the others
after `heartbeat_timeout_s` with "Terminating process because the JAX distributed service detected
fatal errors".
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
from collections.abc import Callable
from typing import TypeVar

import jax
import orbax.checkpoint as ocp

from fmjax.runtime import console, errors

MODES = ("off", "auto")
# Environment variables that say the job runs as one of several processes: where JAX's detection finds no
# cluster although one of these says there is one, the run stops instead of running alone.
_CLUSTER_SIGNS = {"SLURM_NTASKS": lambda v: int(v) > 1, "OMPI_COMM_WORLD_SIZE": lambda v: int(v) > 1,
                  "TPU_WORKER_HOSTNAMES": lambda v: "," in v, "MEGASCALE_COORDINATOR_ADDRESS": bool}
PREPARE_TIMEOUT_S = 6 * 3600  # how long processes 1.. wait for process 0 to prepare a dataset

T = TypeVar("T")
_barriers = itertools.count()


def on_cloud_tpu_vm() -> bool:
  """Whether this is a Cloud TPU VM (libtpu installed and TPU chips present), where JAX finds a pod slice's hosts."""
  return importlib.util.find_spec("libtpu") is not None and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/*"))


def in_detected_cluster() -> bool:
  """Whether the environment says this is one of several processes of a cluster (SLURM, MPI, a TPU pod)."""
  def sign(name, test):
    try:
      return name in os.environ and test(os.environ[name])
    except ValueError:
      return False
  return any(sign(name, test) for name, test in _CLUSTER_SIGNS.items())


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, heartbeat_timeout_s: int = 100) -> bool:
  """Joins the run; False (nothing done) for a single process. With `coordinator_address` all three
  explicit settings are needed; without, `mode='auto'` joins the cluster JAX detects where the environment
  shows one or this is a Cloud TPU VM."""
  if mode not in MODES:
    raise errors.ConfigError(f"--distributed={mode!r} is not one of {MODES}")
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if mode == "off":
      raise errors.ConfigError("--distributed=off contradicts --coordinator_address/--num_processes/--process_id")
    if any(v is None for v in explicit):
      raise errors.ConfigError("a multi-process run needs all of --coordinator_address=HOST:PORT, "
                               "--num_processes=N and --process_id=I")
    if not 0 <= process_id < num_processes:
      raise errors.ConfigError(f"--process_id={process_id} is outside [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
    return True
  several = in_detected_cluster()
  if mode == "off" or not (several or on_cloud_tpu_vm()):
    return False
  try:
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
  except ValueError as e:  # JAX found no cluster: it has no coordinator address to use
    if several:
      signs = ", ".join(f"{n}={os.environ[n]}" for n in _CLUSTER_SIGNS if n in os.environ)
      raise errors.ConfigError(f"the environment says this is one process of several ({signs}), but JAX's "
                               f"cluster detection found no cluster ({e}); give --coordinator_address, "
                               f"--num_processes and --process_id, or --distributed=off to run alone") from e
    return False
  except Exception as e:  # a detected cluster that JAX cannot join
    if not several:  # a TPU VM whose metadata JAX could not read (e.g. a single-host runtime): run alone
      console.say(f"--distributed=auto: JAX's cluster detection failed on this TPU VM ({type(e).__name__}: {e}); "
                  f"running as one process (give --coordinator_address etc. for a pod slice)")
      return False
    raise errors.ConfigError(f"--distributed=auto: jax.distributed.initialize() failed ({type(e).__name__}: "
                             f"{e}); give --coordinator_address, --num_processes and --process_id, or "
                             f"--distributed=off to run alone") from e
  return True


def describe() -> str:
  """One line: this process, the process count, its local devices and the global ones."""
  local, devices = jax.local_devices(), jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return (f"process {jax.process_index()} of {jax.process_count()}: {len(local)} local of {len(devices)} "
          f"{jax.default_backend()} devices ({', '.join(kinds)})")


def barrier(name: str, timeout_s: int) -> None:
  """Waits until every process reaches the barrier `name` (unique per call); a no-op for one process."""
  if jax.process_count() == 1:
    return
  # Over every process, so orbax uses the runtime's barrier with a timeout (not a device collective without one).
  ocp.multihost.sync_global_processes(f"fmjax:{name}:{next(_barriers)}", timeout=timeout_s,
                                      processes=set(range(jax.process_count())))


def first_then_others(name: str, fn: Callable[[], T], timeout_s: int = PREPARE_TIMEOUT_S) -> T:
  """`fn()` on process 0, then (after a barrier) on the others: one process writes what all then read."""
  if jax.process_index() == 0:
    result = fn()
    barrier(name, timeout_s)
    return result
  barrier(name, timeout_s)
  return fn()
