"""XLA flags for several forced CPU host devices: without XLA's intra-op thread pool.

With `--xla_force_host_platform_device_count=N` or `JAX_NUM_CPU_DEVICES=N` (N > 1: the trainer's
data parallelism over a CPU's cores, or the multi-device tests), jaxlib 0.10.2's thunk executor
hands a step's independent collectives (an all-gather and an all-reduce of one step) to the
intra-op Eigen pool, and they start in a different order on different devices. The pool's workers
then block in rendezvous that the other devices can only reach through the same pool, and the step
waits for ever (native stack: `AllGatherThunk::Execute` <- `ThunkExecutor::SplitReadyQueue` <-
`Eigen::ThreadPoolTempl::WorkerLoop`; `bench/RESULTS.md`, "The deadlock, found").
`--xla_cpu_multi_thread_eigen=false` runs each device's thunks in order on its own thread. The
launcher, the tests and the step, pretrain and FmFormer benches add it before JAX starts, unless
the flags already set `xla_cpu_multi_thread_eigen` either way. Only the CPU backend reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

NO_INTRA_OP_POOL = "--xla_cpu_multi_thread_eigen=false"
_FORCED = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def forced_host_devices(xla_flags: str) -> int:
  """The host device count `xla_flags` forces (the last one given counts; 1 if none)."""
  counts = _FORCED.findall(xla_flags)
  return int(counts[-1]) if counts else 1


def without_intra_op_pool(xla_flags: str, cpu_devices: int = 1) -> str:
  """`xla_flags` with NO_INTRA_OP_POOL added where they (or `cpu_devices`, JAX_NUM_CPU_DEVICES's count)
  force several host devices and leave the pool unset; otherwise unchanged."""
  if max(forced_host_devices(xla_flags), cpu_devices) <= 1 or "xla_cpu_multi_thread_eigen" in xla_flags:
    return xla_flags
  return f"{xla_flags} {NO_INTRA_OP_POOL}".strip()


def protect(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Rewrites environ['XLA_FLAGS'] by `without_intra_op_pool`, counting the devices that XLA_FLAGS or
  JAX_NUM_CPU_DEVICES force (call before JAX's backend starts); whether it changed."""
  flags = environ.get("XLA_FLAGS", "")
  try:
    cpu_devices = int(environ.get("JAX_NUM_CPU_DEVICES", "1"))
  except ValueError:
    cpu_devices = 1  # JAX itself reports a malformed value
  safe = without_intra_op_pool(flags, cpu_devices)
  if safe != flags:
    environ["XLA_FLAGS"] = safe
  return safe != flags
