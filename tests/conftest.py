"""Test set-up of the whole suite: the devices, and what is made once and shared.

Devices: every test process sees exactly 4 forced CPU host devices (`FORCED_DEVICES`), whatever
XLA_FLAGS the environment already holds (its own device count is replaced, its other flags kept), so
the 1-vs-4-device comparisons never compare one device with itself; a test that needs the 4 takes
the `four_devices` fixture, which fails loudly where JAX sees fewer. Tests are compile-bound: LLVM
optimisation of the tiny programs is skipped (XLA's own graph passes still run), and several forced
devices go without XLA's intra-op pool, as importing fmjax gives them (fmjax.runtime.compat: the
environment is set here before the first import of fmjax, which applies it).

Made once per test process (the run's, or each of its 2 pytest-xdist workers': setup.cfg; a test file
runs whole on one of them), all under its temporary directory (never the user's home):
* `data_dir`, which $FMJAX_DATA_DIR names for the process (its subprocesses and the notebook too): the
  tiny furnace of the tiny configs (configs/common.TINY_DATA), generated, prepared and its frames
  reduced by 4 there once (`tiny_root`), which the suite's jobs and commands use as it is (align's tiny
  variant, with shorter leads, has a furnace of its own, made there once too); only tests of
  generation and preparation themselves (first-use messages, relative data dirs, the reduced-frame
  cache they damage, the multi-process runs' process 0) make their own;
* one persistent JAX compilation cache beside it (the launcher's default for that data dir), used by
  the in-process runs and the command-line runs of one device, so each such program is compiled once.
  Per process, since JAX writes its cache entries without a lock, and the workers share no file. In
  this process it holds the 4-device programs of the 1-vs-4 tests too (JAX's cache is on or off for a
  whole process); each of those is compiled once, so none is loaded from it;
* one finished tiny run of each job (`pretrain_run`, `fmformer_run`, `align_run`), for the tests that
  only read a finished run. In-process runs use one device (`tiny_job`: num_devices=1) unless the
  device count is the point.

Tiers: tests marked `slow` (multi-process runs, the notebook, command-line kill-and-resume runs) run
with `python -m pytest -m slow`; the default run leaves them out (setup.cfg).
"""

import os
import re

FORCED_DEVICES = 4


def _test_flags(flags: str) -> str:
  """`flags` with exactly FORCED_DEVICES forced host devices and, unless they set it, LLVM optimisation off."""
  kept = re.sub(r"--xla_force_host_platform_device_count=\S*", "", flags).split()
  if not any("xla_backend_optimization_level" in f for f in kept):
    kept.append("--xla_backend_optimization_level=0")
  return " ".join([*kept, f"--xla_force_host_platform_device_count={FORCED_DEVICES}"])


os.environ["XLA_FLAGS"] = _test_flags(os.environ.get("XLA_FLAGS", ""))
os.environ.pop("JAX_NUM_CPU_DEVICES", None)  # the count is XLA_FLAGS' alone
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import faulthandler
import glob
import importlib
import shutil
import sys
import tempfile
import threading

import jax
import pytest

import fmjax  # noqa: F401  # applies fmjax.runtime.compat's workarounds to the environment above

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/

from configs import common
from fmjax.data import downsampled, synthetic, tfds_fmf
from fmjax.train import compile_cache, loop

TINY = synthetic.SyntheticConfig(**common.TINY_DATA)
TIMEOUTS = "FMJAX_TEST_TIMEOUTS"  # the folder where workers leave the stacks of their timed-out tests
_TIMER = pytest.StashKey[threading.Timer]()  # a test's timer in a worker


# ------------------------------------------------------------------------------------------- timeouts
# pytest-timeout (setup.cfg: timeout, thread method) dumps every thread's stack to the terminal and ends
# the process. A pytest-xdist worker's terminal is read by nobody, so there the dump goes to a file that
# the controlling process prints at the end, beside xdist's "worker crashed while running <test>".


def pytest_configure(config):
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ[TIMEOUTS] = tempfile.mkdtemp(prefix="fmjax_timeouts_")  # workers start later and inherit it


@pytest.hookimpl(optionalhook=True)  # pytest-timeout's hooks: no error where it is not installed
def pytest_timeout_set_timer(item, settings):
  folder = os.environ.get(TIMEOUTS)
  if not os.environ.get("PYTEST_XDIST_WORKER") or not folder or settings.method != "thread":
    return None  # pytest-timeout's own timer

  def expire():
    with open(os.path.join(folder, f"{os.environ['PYTEST_XDIST_WORKER']}.txt"), "w", encoding="utf-8") as f:
      f.write(f"{item.nodeid} ran past the {settings.timeout:g} s timeout; every thread's stack:\n")
      f.flush()
      faulthandler.dump_traceback(file=f, all_threads=True)
    os._exit(1)

  item.stash[_TIMER] = timer = threading.Timer(settings.timeout, expire)
  timer.daemon = True
  timer.start()
  return True


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item):
  timer = item.stash.get(_TIMER, None)
  if timer is None:
    return None
  timer.cancel()
  return True


def pytest_unconfigure(config):
  if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(TIMEOUTS):
    shutil.rmtree(os.environ.pop(TIMEOUTS), ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
  folder = os.environ.get(TIMEOUTS)
  for path in sorted(glob.glob(os.path.join(folder, "*.txt"))) if folder else ():
    terminalreporter.section(f"Timeout in worker {os.path.basename(path)[:-4]}")
    with open(path, encoding="utf-8") as f:
      terminalreporter.write(f.read())


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory) -> str:
  """The run's data dir ($FMJAX_DATA_DIR for every job and command of the run) and, beside it, its one
  compilation cache, set for this process before anything is compiled."""
  path = str(tmp_path_factory.mktemp("fmjax_data") / "tfds")
  os.environ["FMJAX_DATA_DIR"] = path
  cache = compile_cache.directory("")  # <run's tmp>/fmjax_data0/jax_cache: the launcher's default for it
  os.makedirs(cache, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


@pytest.fixture(scope="session")
def tiny_root(data_dir) -> str:
  """The tiny furnace (read-only: copy it before changing files), prepared in `data_dir` with its frames
  reduced by 4 (the tiny pretrain input)."""
  root = synthetic.ensure(TINY, data_dir)
  downsampled.ensure(tfds_fmf.load(root, data_dir), 4)
  return root


@pytest.fixture(scope="session")
def tiny_config() -> synthetic.SyntheticConfig:
  return dataclasses.replace(TINY)


@pytest.fixture(scope="session")
def four_devices() -> list:
  if jax.device_count() < FORCED_DEVICES:
    pytest.fail(f"this test needs {FORCED_DEVICES} devices and JAX sees {jax.device_count()} "
                f"({jax.default_backend()}); tests/conftest.py forces {FORCED_DEVICES} CPU devices through XLA_FLAGS "
                "unless JAX started before it or JAX_PLATFORMS names another backend")
  return jax.devices()[:FORCED_DEVICES]


@pytest.fixture(scope="session")
def tiny_job(tiny_root, data_dir):
  """make(job, variants='tiny', **top-level overrides): `configs/<job>.py:<variants>` on the shared tiny
  furnace, run on one device."""
  def make(job: str, variants: str = "tiny", **overrides):
    config = importlib.import_module(f"configs.{job}").get_config(variants)
    config.data.data_dir = data_dir
    config.num_devices = 1
    config.update(overrides)
    return config
  return make


def _finished(tmp_path_factory, name: str, config) -> tuple[str, dict]:
  workdir = str(tmp_path_factory.mktemp(name))
  return workdir, loop.train_and_evaluate(config, workdir)


@pytest.fixture(scope="session")
def pretrain_run(tiny_job, tmp_path_factory) -> tuple[str, dict]:
  """(workdir, summary) of a finished configs/pretrain.py:tiny run: 6 steps, checkpoints at 3 and 6."""
  return _finished(tmp_path_factory, "pretrain_run", tiny_job("pretrain"))


@pytest.fixture(scope="session")
def fmformer_run(tiny_job, tmp_path_factory) -> tuple[str, dict]:
  """(workdir, summary) of a finished configs/fmformer.py:tiny run: 6 steps, checkpoints at 3 and 6."""
  return _finished(tmp_path_factory, "fmformer_run", tiny_job("fmformer"))


@pytest.fixture(scope="session")
def align_run(tiny_job, tmp_path_factory) -> tuple:
  """(config, workdir, summary) of a finished configs/align.py:tiny run."""
  config = tiny_job("align")
  return (config, *_finished(tmp_path_factory, "align_run", config))


@pytest.fixture(scope="session")
def cli_env(data_dir, tiny_root) -> dict:
  """Environment for command-line runs started by tests: CPU, the process's data dir with the tiny furnace
  ready, and so its compilation cache, which fmjax turns on where it is safe (a run of
  --config.num_devices=1), every program cached however briefly it compiled."""
  return {**os.environ, "JAX_PLATFORMS": "cpu", "FMJAX_DATA_DIR": data_dir,
          compile_cache.MIN_COMPILE_TIME_VARIABLE: "0"}
