"""Every version workaround of fmjax, in one place, from Colab's stack (jax 0.7.2, the oldest) to the newest.

`.ci/colab-constraints.txt` pins Colab's stack; setup.cfg bounds the rest. Each workaround below is one small
function gated on the versions it is for (`version_below`), saying which symptom it removes and why this fix;
on other versions it changes nothing. `WORKAROUNDS` lists them. Nothing else in fmjax branches on a version.

`apply()` applies every workaround that the installed versions need and that can be applied ahead of use.
`fmjax/__init__.py` calls it, so importing any fmjax module applies them: the launcher, the tests, the
benches, the notebook and a user's own script get them without a call of their own. One of them rewrites
XLA_FLAGS, which XLA reads once, when JAX's backend starts (the first computation or `jax.devices()`, not
`import jax`): import fmjax before that, and set XLA_FLAGS / JAX_NUM_CPU_DEVICES before importing it.

Three cannot be applied at import, and are applied from here where they are needed:
* grain's parent-process flag exists only once grain is imported: fmjax.data.pipeline, the one module that
  imports grain, calls `apply()` again right after importing it;
* the compilation cache's deadlock is a property of a run (its backend and devices): fmjax.train.compile_cache
  asks `persistent_cache_hazard` before turning the cache on;
* orbax's noise is only noise while fmjax probes a step that may be damaged: fmjax.checkpoints.restore wraps each
  probe in `quiet_orbax_probe`.

Where no release is known to fix a bug, the gate is every release setup.cfg admits (`SUPPORTED_BELOW`, which
tests/test_colab_install.py keeps equal to setup.cfg's upper bounds), so raising a bound means checking that bug
on the new releases first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from importlib import metadata

# setup.cfg's upper bounds (exclusive): the releases no gate below may leave out without evidence.
SUPPORTED_BELOW = {"jax": (0, 13), "grain": (0, 3), "orbax-checkpoint": (0, 14)}


@functools.cache
def installed(package: str) -> str | None:
  """The installed version of distribution `package`, or None where it is not installed.

  Read once per process: the packages a process has loaded keep their version, and a lookup takes long enough
  (milliseconds, scanning sys.path) to widen the gap between two probes of `quiet_orbax_probe`, where tensorstore's
  late callbacks into orbax's closed event loops then print their tracebacks (seen on orbax 0.12.8).
  """
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def version_below(package: str, release: tuple[int, ...]) -> bool:
  """Whether the installed `package` is older than `release` (numeric parts of its version; absent: False)."""
  version = installed(package)
  if version is None:
    return False
  return tuple(int(part) for part in re.findall(r"\d+", version)[:len(release)]) < release


# ------------------------------------------------------------------ CPU collectives: no intra-op pool

NO_INTRA_OP_POOL = "--xla_cpu_multi_thread_eigen=false"
_FORCED = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def cpu_collectives_deadlock() -> bool:
  """Gate of `cpu_collectives_in_order`: jaxlib below SUPPORTED_BELOW's jax bound, i.e. every jaxlib fmjax admits.

  Seen on jaxlib 0.10.2: bench/RESULTS.md, "The deadlock, found" (a pretrain job on 4 forced devices hung at
  step 14), and again on 2026-12-05 (`configs/pretrain.py:tiny`, 600 steps, 4 forced devices, the pool on:
  rendezvous "may be stuck" at step 97). Not seen on Colab's 0.7.2: the same command ran its 600 steps and the
  evaluation twice (seeds 0 and 1). That is a race passed twice, not a fixed release, and nothing is known of
  the releases between or after, so the gate covers every jaxlib fmjax admits, 0.7.2 included: the flag costs
  nothing measurable (RESULTS.md: FmFormer on 2 host devices), and XLA of both 0.7.2 and 0.10.2 knows it (XLA
  stops at an unknown flag in XLA_FLAGS, so a release that drops it would fail loudly, not hang).
  """
  return version_below("jaxlib", SUPPORTED_BELOW["jax"])


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


def cpu_collectives_in_order(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Adds NO_INTRA_OP_POOL to environ['XLA_FLAGS'] where several CPU host devices are forced; whether it changed.

  Versions: `cpu_collectives_deadlock`. Symptom: with `--xla_force_host_platform_device_count=N` or
  `JAX_NUM_CPU_DEVICES=N` (N > 1: data parallelism over a CPU's cores, the multi-device tests), a step waits
  for ever. jaxlib's thunk executor hands a step's independent collectives (an all-gather and an all-reduce) to
  the intra-op Eigen pool, where they start in a different order on different devices; the pool's workers block
  in rendezvous that the other devices can only reach through the same pool (native stack:
  `AllGatherThunk::Execute` <- `ThunkExecutor::SplitReadyQueue` <- `Eigen::ThreadPoolTempl::WorkerLoop`).
  Fix: `--xla_cpu_multi_thread_eigen=false` runs each device's thunks in order on its own thread. XLA reads
  XLA_FLAGS when JAX's backend starts, so this must run before that; a user's own `xla_cpu_multi_thread_eigen`
  either way is kept, and nothing changes without several forced devices (only the CPU backend reads the flag).
  """
  if not cpu_collectives_deadlock():
    return False
  flags = environ.get("XLA_FLAGS", "")
  try:
    cpu_devices = int(environ.get("JAX_NUM_CPU_DEVICES", "1"))
  except ValueError:
    cpu_devices = 1  # JAX itself reports a malformed value
  safe = without_intra_op_pool(flags, cpu_devices)
  if safe != flags:
    environ["XLA_FLAGS"] = safe
  return safe != flags


# ------------------------------------------------------------------ the persistent compilation cache


def persistent_cache_hazard(backend: str, devices: int) -> str | None:
  """Why JAX's persistent compilation cache must stay off for a run on `devices` devices of `backend`; None: it may
  be on.

  Versions: `cpu_collectives_deadlock`'s gate, every jaxlib fmjax admits. Symptom: on the CPU backend with
  more than one device, jaxlib 0.10.2 deadlocked in the CPU collectives' rendezvous running a data-parallel step
  loaded from the cache (the pretrain step on 4 forced devices; bench/RESULTS.md). Probably the mechanism of
  `cpu_collectives_in_order` (not checked, so that flag is not assumed to make the cache safe), and not tested
  on Colab's 0.7.2 or with several CPU processes (gloo collectives), which stay off too. Fix: no cache there, so
  each run compiles its steps; one device, or any other backend, has no such collectives and keeps the cache.
  """
  if backend != "cpu" or devices <= 1 or not cpu_collectives_deadlock():
    return None
  return (f"jaxlib {installed('jaxlib')} can deadlock running a cached step on {devices} CPU devices "
          "(fmjax.runtime.compat.persistent_cache_hazard)")


# ------------------------------------------------------------------ log lines that say nothing to a user

_GRAIN_PROFILING = "Grain multiprocess worker profiling requires jaxlib"


def _absl_logger() -> logging.Logger:
  """absl's logger, made by absl: a `logging.getLogger("absl")` before absl's import would make a plain Logger
  that absl then adopts, and its lines would name absl's own file as their caller."""
  from absl import logging as absl_logging  # only where a filter is due

  return absl_logging.get_absl_logger()


class _DropMessage(logging.Filter):
  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.prefix)


def grain_profiling_notice() -> bool:
  """Gate of `quiet_grain_profiling_notice`: jaxlib below 0.11.

  grain 0.2.18 logs the notice where jaxlib's extension is older than version 448, which grain puts at jaxlib
  0.11; Colab's 0.7.2 has 373 and logs it, 0.10.2 has 467 and does not (the filter is then idle).
  """
  return version_below("jaxlib", (0, 11))


def quiet_grain_profiling_notice() -> bool:
  """Drops grain's notice that its worker profiling needs a newer jaxlib; whether it added the filter.

  Versions: `grain_profiling_notice`. Symptom: one warning at grain's import, before every job's output (and
  before an `error:` line, which should be the only one); fmjax never turns that profiling on. Fix: a filter on
  absl's logger that drops that one message by its text, added before grain is imported (it logs it at import).
  """
  if not grain_profiling_notice():
    return False
  absl = _absl_logger()
  if any(isinstance(f, _DropMessage) and f.prefix == _GRAIN_PROFILING for f in absl.filters):
    return False
  absl.addFilter(_DropMessage(_GRAIN_PROFILING))
  return True


# ------------------------------------------------------------------ grain's workers outside an absl app

# grain flags that the parent process reads while it starts worker processes.
_GRAIN_PARENT_FLAGS = ("grain_enable_multiprocess_worker_profiling",)


def grain_reads_flags_in_parent() -> bool:
  """Gate of `grain_workers_outside_absl`: grain below SUPPORTED_BELOW's bound (0.2.18, fmjax's lowest, reads the
  flag; nothing later is known not to) beside jaxlib 0.8 or newer.

  grain reads the flag only where jaxlib's extension has the subprocess profiling hooks (version 448 or later):
  Colab's jaxlib 0.7.2 (373) has not, and grain 0.2.18's workers start there without this workaround; beside
  0.10.2 (467) they fail without it (tests/test_pipeline.py's worker test runs on both stacks). The first
  jaxlib release with 448 is not known here, so the gate starts right after 0.7.2.
  """
  return version_below("grain", SUPPORTED_BELOW["grain"]) and not version_below("jaxlib", (0, 8))


def grain_workers_outside_absl() -> bool:
  """Marks grain's parent-process flags as given, at their defaults, where flags are unparsed; whether it did.

  Versions: `grain_reads_flags_in_parent`. Symptom: starting its worker processes (`mp_prefetch`), grain reads
  --grain_enable_multiprocess_worker_profiling in this process through plain FLAGS access, which raises
  UnparsedFlagAccessError outside an absl app (the tests, a notebook, a user's script); the spawned workers
  themselves need no parsed flags. Fix: only that flag is marked given, at its default (as grain marks its debug
  flags in the workers); `FLAGS.is_parsed()` and every other flag stay as they were, so a later absl app still
  parses its command line as usual. The flag exists once grain is imported: `apply()` after that does it.
  """
  if not grain_reads_flags_in_parent() or "grain" not in sys.modules:
    return False
  from absl import flags  # grain imports absl first

  if flags.FLAGS.is_parsed():
    return False
  marked = False
  for name in _GRAIN_PARENT_FLAGS:
    if name in flags.FLAGS and not flags.FLAGS[name].present:
      flags.FLAGS[name].present = 1
      marked = True
  return marked


# ------------------------------------------------------------------ orbax's noise while a step is probed


def orbax_probe_noise() -> bool:
  """Gate of `quiet_orbax_probe`: orbax-checkpoint below SUPPORTED_BELOW's bound, every release fmjax admits.

  Seen on Colab's 0.12.4 and on 0.12.8, with the same sources for its warnings; which noise appears in a given
  read is a race (0.12.8 more often left tracebacks, 0.12.4 an asyncio error). No release is known without it.
  """
  return version_below("orbax-checkpoint", SUPPORTED_BELOW["orbax-checkpoint"])


_ORBAX_PATH = f"{os.sep}orbax{os.sep}"


class _OrbaxWarnings(logging.Filter):
  """Drops the records below `below` (of orbax's modules only, where `orbax_only`)."""

  def __init__(self, below: int, orbax_only: bool):
    super().__init__()
    self.below, self.orbax_only = below, orbax_only

  def filter(self, record: logging.LogRecord) -> bool:
    ours = not self.orbax_only or _ORBAX_PATH in record.pathname
    return not (ours and record.levelno < self.below)


class _Probes:
  """The probes under way (nested or from several threads: one set of filters and one hook serves them all)."""
  lock = threading.Lock()
  depth = 0
  hook: Callable | None = None  # the unraisable hook that the outermost probe under way installed
  previous: Callable | None = None  # and the one it replaced
  absl = _OrbaxWarnings(logging.ERROR, orbax_only=True)  # "Metadata file does not exist", "read only", ...
  asyncio = _OrbaxWarnings(logging.CRITICAL, orbax_only=False)  # orbax's abandoned read tasks

  @classmethod
  def chained(cls, previous: Callable) -> Callable:
    """A sys.unraisablehook that drops what is raised while a probe runs and passes the rest to `previous`."""
    def hook(unraisable) -> None:
      if not cls.depth:
        previous(unraisable)
    return hook


@contextlib.contextmanager
def quiet_orbax_probe() -> Iterator[None]:
  """Silences orbax's warnings and the tracebacks of its abandoned reads while fmjax probes a step.

  Versions: `orbax_probe_noise`. Symptom: reading a step that may be damaged (its metadata, then its arrays),
  orbax logs warnings ("Metadata file does not exist", "Item ... could not be restored", "Given directory is
  read only" for a read-only manager, as asked), asyncio logs its abandoned read tasks, and the collected read
  coroutines and tensorstore's callbacks into closed event loops print "Exception ignored" tracebacks; fmjax
  reports the step's problem once itself (a DamagedCheckpoint). Fix, for the probe's duration only: filters on
  absl's logger (orbax's records below ERROR) and asyncio's (below CRITICAL), and a sys.unraisablehook that drops
  what is raised meanwhile and chains to the hook it replaced. At the end the abandoned coroutines are collected
  while still silenced; the filters go, and the previous hook comes back only if ours is still the installed one
  (a hook installed meanwhile stays, and ours, left under it, passes everything on). Nested probes share one.
  """
  if not orbax_probe_noise():
    yield
    return
  with _Probes.lock:
    _Probes.depth += 1
    if _Probes.depth == 1:
      _absl_logger().addFilter(_Probes.absl)
      logging.getLogger("asyncio").addFilter(_Probes.asyncio)
      _Probes.previous = sys.unraisablehook
      _Probes.hook = sys.unraisablehook = _Probes.chained(sys.unraisablehook)
  try:
    yield
  finally:
    if _Probes.depth == 1:  # the outermost: finalise the abandoned coroutines while their tracebacks are silenced
      gc.collect()
    with _Probes.lock:
      _Probes.depth -= 1
      if _Probes.depth == 0:
        if sys.unraisablehook is _Probes.hook:  # else a hook installed meanwhile stays (ours, under it, chains)
          sys.unraisablehook = _Probes.previous
        _Probes.hook = _Probes.previous = None
        logging.getLogger("asyncio").removeFilter(_Probes.asyncio)
        _absl_logger().removeFilter(_Probes.absl)


# ------------------------------------------------------------------ the registry


@dataclasses.dataclass(frozen=True)
class Workaround:
  """One entry of WORKAROUNDS: its function, the gate that says whether the installed versions need it, and
  how it is applied (`apply()` calls those it applies ahead of use)."""
  fix: Callable
  needed: Callable[[], bool]
  applied: str
  ahead: bool  # applied by `apply()`


WORKAROUNDS = (
    Workaround(cpu_collectives_in_order, cpu_collectives_deadlock, "apply(), at fmjax's import", ahead=True),
    Workaround(quiet_grain_profiling_notice, grain_profiling_notice,
               "apply(), at fmjax's import (before grain's)", ahead=True),
    Workaround(grain_workers_outside_absl, grain_reads_flags_in_parent,
               "apply(), once grain is imported (fmjax.data.pipeline)", ahead=True),
    Workaround(persistent_cache_hazard, cpu_collectives_deadlock,
               "fmjax.train.compile_cache.enable asks it", ahead=False),
    Workaround(quiet_orbax_probe, orbax_probe_noise, "around fmjax.checkpoints.restore's probes of a step",
               ahead=False),
)


def apply() -> list[str]:
  """Applies every workaround of WORKAROUNDS applied ahead of use that the installed versions need (each is
  idempotent, so calling this again changes nothing); the names of those that changed something now."""
  return [w.fix.__name__ for w in WORKAROUNDS if w.ahead and w.fix()]
