"""fmjax.runtime.compat: each version workaround on both sides of its gate, `apply()` once and again, the
environment JAX starts with after `import fmjax`; the suite's deprecation filters."""

import logging
import os
import subprocess
import sys
import warnings

import pytest
from absl import flags

from fmjax.runtime import compat

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

OFF = compat.NO_INTRA_OP_POOL
FORCED = "--xla_force_host_platform_device_count"
GRAIN_FLAG = "grain_enable_multiprocess_worker_profiling"
# The stacks fmjax has been run on, and releases past every gate (setup.cfg's upper bounds).
COLAB = {"jaxlib": "0.7.2", "grain": "0.2.18", "orbax-checkpoint": "0.12.4"}
NEWEST = {"jaxlib": "0.10.2", "grain": "0.2.18", "orbax-checkpoint": "0.12.8"}
BEYOND = {"jaxlib": "0.13.0", "grain": "0.3.0", "orbax-checkpoint": "0.14.0"}


@pytest.fixture
def versions(monkeypatch):
  """versions(table): the installed versions that compat sees are `table`'s (a package not in it: not installed)."""
  return lambda table: monkeypatch.setattr(compat, "installed", table.get)


@pytest.fixture
def fresh(monkeypatch):
  """The process's state that compat changes, with the changes of its import undone for the test: no filter of
  compat's on absl's logger, grain's flag not given, XLA_FLAGS forcing 2 devices; all restored afterwards."""
  absl = logging.getLogger("absl")
  monkeypatch.setattr(absl, "filters", [f for f in absl.filters if not isinstance(f, compat._DropMessage)])
  if GRAIN_FLAG in flags.FLAGS:
    monkeypatch.setattr(flags.FLAGS[GRAIN_FLAG], "present", 0)
  monkeypatch.setenv("XLA_FLAGS", f"{FORCED}=2")
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)


def state() -> dict:
  """What compat may change in this process."""
  return dict(environ=dict(os.environ), hook=sys.unraisablehook,
              filters={name: list(logging.getLogger(name).filters) for name in ("absl", "asyncio")},
              grain_flag=flags.FLAGS[GRAIN_FLAG].present if GRAIN_FLAG in flags.FLAGS else None)


def test_version_below_compares_the_installed_release():
  assert compat.version_below("jax", (99,)) and not compat.version_below("jax", (0, 4))
  assert not compat.version_below("no-such-distribution", (1,))
  assert compat.installed("no-such-distribution") is None


# ------------------------------------------------------------------ several CPU devices: no intra-op pool


def test_several_forced_devices_get_no_intra_op_pool():
  assert compat.without_intra_op_pool(f"{FORCED}=2") == f"{FORCED}=2 {OFF}"
  flags_ = f"--xla_dump_to=/tmp/d {FORCED}=4 --xla_backend_optimization_level=0"
  assert compat.without_intra_op_pool(flags_) == flags_ + " " + OFF


def test_one_device_or_none_forced_is_left_alone():
  for flags_ in ("", f"{FORCED}=1", "--xla_dump_to=/tmp/d", f"{FORCED}=4 {FORCED}=1"):
    assert compat.without_intra_op_pool(flags_) == flags_


def test_a_pool_setting_of_the_users_own_is_kept():
  for flags_ in (f"{FORCED}=2 --xla_cpu_multi_thread_eigen=true", f"{OFF} {FORCED}=8"):
    assert compat.without_intra_op_pool(flags_) == flags_


def test_forced_host_devices_reads_the_last_count():
  assert compat.forced_host_devices("") == 1
  assert compat.forced_host_devices(f"{FORCED}=12") == 12
  assert compat.forced_host_devices(f"{FORCED}=1 {FORCED}=3") == 3


@pytest.mark.parametrize("stack", [COLAB, NEWEST])
def test_the_environment_is_rewritten_once_where_jaxlib_may_deadlock(versions, stack):
  versions(stack)
  env = {"XLA_FLAGS": f"{FORCED}=2"}
  assert compat.cpu_collectives_in_order(env) and env["XLA_FLAGS"] == f"{FORCED}=2 {OFF}"
  assert not compat.cpu_collectives_in_order(env) and env["XLA_FLAGS"] == f"{FORCED}=2 {OFF}"  # already there
  empty = {}
  assert not compat.cpu_collectives_in_order(empty) and empty == {}


def test_devices_forced_by_jax_num_cpu_devices_count_too(versions):
  versions(NEWEST)
  env = {"JAX_NUM_CPU_DEVICES": "2"}
  assert compat.cpu_collectives_in_order(env) and env["XLA_FLAGS"] == OFF
  for value in ("1", "-1", "two"):  # one device, JAX's "unset", and a value JAX itself rejects
    env = {"JAX_NUM_CPU_DEVICES": value, "XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    assert not compat.cpu_collectives_in_order(env) and env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d"


def test_the_environment_stays_as_it_is_beyond_the_supported_jaxlibs(versions):
  versions(BEYOND)
  env = {"XLA_FLAGS": f"{FORCED}=2", "JAX_NUM_CPU_DEVICES": "4"}
  assert not compat.cpu_collectives_in_order(env) and env == {"XLA_FLAGS": f"{FORCED}=2", "JAX_NUM_CPU_DEVICES": "4"}


# ------------------------------------------------------------------ the compilation cache


@pytest.mark.parametrize("stack", [COLAB, NEWEST])
def test_the_cache_stays_off_for_several_cpu_devices_only(versions, stack):
  versions(stack)
  reason = compat.persistent_cache_hazard("cpu", 4)
  assert reason and f"jaxlib {stack['jaxlib']}" in reason and "4 CPU devices" in reason
  assert compat.persistent_cache_hazard("cpu", 1) is None
  assert compat.persistent_cache_hazard("tpu", 8) is None and compat.persistent_cache_hazard("gpu", 2) is None


def test_the_cache_is_safe_beyond_the_supported_jaxlibs(versions):
  versions(BEYOND)
  assert compat.persistent_cache_hazard("cpu", 4) is None


# ------------------------------------------------------------------ grain's profiling notice


@pytest.mark.parametrize("stack, dropped", [(COLAB, True), (NEWEST, True), ({**NEWEST, "jaxlib": "0.11.0"}, False)])
def test_grains_profiling_notice_is_dropped_below_jaxlib_0_11_and_nothing_else(versions, fresh, stack, dropped):
  versions(stack)
  logger = logging.getLogger("absl")
  notice = logging.LogRecord("absl", logging.WARNING, "profiler.py", 141, compat._GRAIN_PROFILING + " extension "
                             "version 448 or later (jaxlib >= 0.11.0). Current version: 373.", None, None)
  other = logging.LogRecord("absl", logging.WARNING, "x.py", 1, "Grain says something else", None, None)
  assert compat.quiet_grain_profiling_notice() == dropped
  assert not compat.quiet_grain_profiling_notice()  # once is enough
  assert sum(isinstance(f, compat._DropMessage) for f in logger.filters) == int(dropped)
  assert logger.filter(notice) != dropped and logger.filter(other)


# ------------------------------------------------------------------ grain's workers outside an absl app


@pytest.mark.parametrize("stack, marked", [(NEWEST, True), (COLAB, False), ({**NEWEST, "grain": "0.3.0"}, False)])
def test_grains_parent_flag_is_given_where_grain_reads_it(versions, fresh, stack, marked):
  """grain 0.2.18 reads its flag beside jaxlib 0.10.2 and not beside Colab's 0.7.2 (test_pipeline's worker test
  starts workers on each stack); with flags unparsed, as here, only that flag is marked given."""
  import grain  # noqa: F401  # defines the flag
  versions(stack)
  before = {name: flags.FLAGS[name].present for name in flags.FLAGS}
  assert not flags.FLAGS.is_parsed()
  assert compat.grain_workers_outside_absl() == marked
  assert not compat.grain_workers_outside_absl()  # once is enough
  changed = [name for name in flags.FLAGS if flags.FLAGS[name].present != before[name]]
  assert changed == ([GRAIN_FLAG] if marked else []) and not flags.FLAGS.is_parsed()
  assert flags.FLAGS[GRAIN_FLAG].value is False  # its default, now readable


# ------------------------------------------------------------------ orbax's noise while a step is probed


def _record(logger: str, level: int, path: str) -> logging.LogRecord:
  return logging.LogRecord(logger, level, path, 1, "a message", None, None)


ORBAX_FILE = os.path.join("site-packages", "orbax", "checkpoint", "checkpoint_manager.py")


@pytest.mark.parametrize("stack", [COLAB, NEWEST])
def test_a_probe_silences_orbax_for_its_duration_only(versions, monkeypatch, stack):
  versions(stack)
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
  absl, asyncio = logging.getLogger("absl"), logging.getLogger("asyncio")
  before, seen = state(), []
  with compat.quiet_orbax_probe():
    assert sys.unraisablehook is not before["hook"]
    assert not absl.filter(_record("absl", logging.WARNING, ORBAX_FILE))  # "Given directory is read only"
    assert absl.filter(_record("absl", logging.ERROR, ORBAX_FILE))
    assert absl.filter(_record("absl", logging.WARNING, os.path.join("fmjax", "train", "checkpoint.py")))
    assert not asyncio.filter(_record("asyncio", logging.ERROR, "base_events.py"))  # abandoned read tasks
    with compat.quiet_orbax_probe():  # nested: the same filters and hook
      assert len(absl.filters) == len(before["filters"]["absl"]) + 1
    sys.unraisablehook("an abandoned read")  # dropped
    mine = seen.append
    sys.unraisablehook = mine  # a hook installed while the probe runs, not chained
  assert state() == {**before, "hook": mine} and seen == []  # the filters gone; the newer hook stays


def test_a_probe_chains_to_the_hook_it_replaced(versions, monkeypatch):
  versions(NEWEST)
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  with compat.quiet_orbax_probe():
    sys.unraisablehook("during")
  assert sys.unraisablehook == seen.append and seen == []  # put back as it was
  with compat.quiet_orbax_probe():
    probe_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: probe_hook(unraisable)  # a later hook, chained to ours
    sys.unraisablehook("during")
  assert sys.unraisablehook is not probe_hook and seen == []  # the later hook stays, ours under it
  sys.unraisablehook("after")
  assert seen == ["after"]  # ours passes on what comes once the probe is over


def test_a_probe_changes_nothing_beyond_the_supported_orbax(versions):
  versions(BEYOND)
  before = state()
  with compat.quiet_orbax_probe():
    assert state() == before


# ------------------------------------------------------------------ apply(): the registry, once and again


def test_apply_once_and_again(versions, fresh):
  import grain  # noqa: F401
  versions(NEWEST)
  assert compat.apply() == ["cpu_collectives_in_order", "quiet_grain_profiling_notice", "grain_workers_outside_absl"]
  after = state()
  assert os.environ["XLA_FLAGS"] == f"{FORCED}=2 {OFF}" and after["grain_flag"]
  assert compat.apply() == [] and state() == after


def test_apply_changes_nothing_on_versions_that_need_none_of_it(versions, fresh):
  import grain  # noqa: F401
  versions(BEYOND)
  before = state()
  assert compat.apply() == [] and state() == before
  assert not any(w.needed() for w in compat.WORKAROUNDS)


def test_every_workaround_and_its_gate_say_what_they_are_for():
  for workaround in compat.WORKAROUNDS:
    assert "Versions:" in (workaround.fix.__doc__ or ""), workaround
    assert workaround.needed.__doc__ and workaround.applied


@pytest.mark.parametrize("forcing, order", [({"XLA_FLAGS": f"{FORCED}=4"}, "import fmjax, jax"),
                                            ({"JAX_NUM_CPU_DEVICES": "4"}, "import jax, fmjax")])
def test_jax_starts_with_the_flag_after_importing_fmjax(forcing, order):
  """A fresh process forcing 4 CPU devices: importing fmjax, before or after `import jax` (which does not start
  JAX's backend), leaves the flag in the environment that XLA then reads, and the 4 devices run a collective.
  absl's logger, which compat filters, is still absl's own (made by absl, not as a plain Logger before it)."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  code = (f"{order}, logging, os\n"
          "from absl import logging as absl_logging\n"
          "print(os.environ.get('XLA_FLAGS', ''))\n"
          "print(jax.device_count(), int(jax.pmap(lambda x: jax.lax.psum(x, 'd'), 'd')(jax.numpy.ones(4))[0]))\n"
          "print(type(logging.getLogger('absl')).__name__)")
  out = subprocess.run([sys.executable, "-c", code], env={**env, **forcing, "JAX_PLATFORMS": "cpu"},
                       capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  xla_flags, devices, absl_logger = out.stdout.splitlines()[-3:]
  assert (OFF in xla_flags.split()) == compat.cpu_collectives_deadlock() and devices == "4 4"
  assert absl_logger == "ABSLLogger"


# ------------------------------------------------------------------ the suite's deprecation filters


@pytest.mark.parametrize("module, fails", [("fmjax.train.step", True), ("fmjax", True), ("configs.pretrain", True),
                                           ("common", True), ("test_train", True), ("crash", True), ("toy.job", True),
                                           ("optax._src.alias", False), ("jaxlib", False), ("matplotlib.text", False)])
def test_deprecations_from_fmjax_fail_the_suite_and_others_show(module, fails):
  """setup.cfg's filterwarnings as pytest applies them: a DeprecationWarning attributed to fmjax's code (what a
  deprecated JAX/flax/optax API warns at its caller, stacklevel 2) raises; a third-party one is only recorded."""
  if fails:
    with pytest.raises(DeprecationWarning, match="old API"):
      warnings.warn_explicit("old API", DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module)
  else:
    with warnings.catch_warnings(record=True) as shown:  # keeps the configured filters (pytest.warns resets them)
      warnings.warn_explicit("old API", DeprecationWarning, f"{module.replace('.', '/')}.py", 1, module=module)
    assert [str(w.message) for w in shown] == ["old API"]


@pytest.mark.parametrize("module, message", [
    ("matplotlib._fontconfig_pattern", "'resetCache' deprecated - use 'reset_cache'"),
    ("matplotlib._mathtext", "'endQuoteChar' argument is deprecated, use 'end_quote_char'"),
    ("pyparsing.util", "'parseAll' argument is deprecated, use 'parse_all'")])
def test_matplotlibs_pyparsing_notices_are_filtered_by_their_text(module, message):
  with warnings.catch_warnings(record=True) as shown:
    warnings.warn_explicit(message, DeprecationWarning, "x.py", 1, module=module)
  assert shown == []
