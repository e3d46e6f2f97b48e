"""JAX's persistent compilation cache, on by default: a second run of a job loads its compiled steps.

`config.compile_cache` names the directory ('' : ~/.cache/fmjax/jax_cache, or $FMJAX_DATA_DIR's
sibling `jax_cache` when that is set; 'off': no cache). Where a cached multi-device step can deadlock
(`fmjax.runtime.compat.persistent_cache_hazard`: the CPU backend with more than one device in the run,
forced host devices or several processes; a run of `num_devices=1` among them may cache), it stays off,
and the run says so once.
"""

from __future__ import annotations

import os

import jax

from fmjax.runtime import compat, console, paths

OFF = "off"
MIN_COMPILE_TIME_VARIABLE = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # JAX's; fmjax's default is 1 s
_told = set()  # the reasons for leaving the cache off that this process has given


def directory(setting: str) -> str | None:
  """The cache directory `setting` names (None: off)."""
  if setting == OFF:
    return None
  if setting:
    return paths.resolve(setting)
  data_dir = os.environ.get("FMJAX_DATA_DIR")
  base = os.path.dirname(paths.resolve(data_dir).rstrip(os.sep)) if data_dir else paths.resolve("~/.cache/fmjax")
  return os.path.join(base, "jax_cache")


def hazard(devices: int | None = None) -> str | None:
  """Why the cache must stay off for a run on `devices` devices of this process's backend (None: every device),
  or None where it may be on."""
  return compat.persistent_cache_hazard(jax.default_backend(), devices or jax.device_count())


def enable(setting: str, devices: int | None = None) -> str | None:
  """Points JAX's persistent cache at `directory(setting)` (unless `hazard(devices)`, which is said once per
  process); the directory or None."""
  path = directory(setting)
  if path is None:
    return None
  reason = hazard(devices)
  if reason is not None:
    if reason not in _told:
      _told.add(reason)
      console.say(f"compilation cache off: {reason}")
    return None
  if jax.config.jax_compilation_cache_dir != path:
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    if MIN_COMPILE_TIME_VARIABLE not in os.environ:  # the user's own threshold stands
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return path
