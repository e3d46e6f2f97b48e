"""JAX's persistent compilation cache, on by default: a second run of a job loads its compiled steps.

`config.compile_cache` names the directory ('' : ~/.cache/fmjax/jax_cache, or $FMJAX_DATA_DIR's
sibling `jax_cache` when that is set; 'off': no cache). It is left off on the CPU backend with more
than one device in the run (forced host devices, as in the multi-device tests; a run of
`num_devices=1` among them may cache): there, jaxlib
0.10.2 deadlocks in the CPU collectives' rendezvous when it runs a data-parallel step loaded from the
cache (seen with the pretrain step on 4 forced devices); a multi-process run on CPU (gloo collectives)
leaves it off too, untested there.
"""

from __future__ import annotations

import os

import jax

from fmjax.runtime import paths

OFF = "off"
MIN_COMPILE_TIME_VARIABLE = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"  # JAX's; fmjax's default is 1 s


def directory(setting: str) -> str | None:
  """The cache directory `setting` names (None: off)."""
  if setting == OFF:
    return None
  if setting:
    return paths.resolve(setting)
  data_dir = os.environ.get("FMJAX_DATA_DIR")
  base = os.path.dirname(paths.resolve(data_dir).rstrip(os.sep)) if data_dir else paths.resolve("~/.cache/fmjax")
  return os.path.join(base, "jax_cache")


def safe_here(devices: int | None = None) -> bool:
  """False where a cached multi-device step can deadlock: the CPU backend, with a run on several devices
  (`devices`, the run's count; None: every device)."""
  return not (jax.default_backend() == "cpu" and (devices or jax.device_count()) > 1)


def enable(setting: str, devices: int | None = None) -> str | None:
  """Points JAX's persistent cache at `directory(setting)` (where `safe_here(devices)`); the directory or
  None."""
  path = directory(setting)
  if path is None or not safe_here(devices):
    return None
  if jax.config.jax_compilation_cache_dir != path:
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    if MIN_COMPILE_TIME_VARIABLE not in os.environ:  # the user's own threshold stands
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return path
