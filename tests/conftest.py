"""Test set-up: 4 forced host devices (multi-device behaviour on a CPU) and shared tiny datasets."""

import os

from fmjax import cpu_flags

# Tests are compile-bound: LLVM optimisation of the (tiny) compiled programs is skipped, which halves the
# compile time of a training step; XLA's own graph passes still run. Several forced devices go without the
# intra-op thread pool, as the launcher gives them (fmjax.cpu_flags: their collectives can deadlock in it).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
cpu_flags.protect()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from fmjax.data import synthetic  # noqa: E402

TINY = synthetic.SyntheticConfig(recordings=2, duration_s=1200, fps=1.0, image_size=32, lead_min_s=120,
                                 lead_max_s=200, anomaly_min_s=200, anomaly_max_s=400, spot_radius_min=4,
                                 spot_radius_max=7, seed=7)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> str:
  """A small synthetic FMF root shared by the tests (read-only: copy it before changing files)."""
  root = str(tmp_path_factory.mktemp("fmf") / "tiny")
  synthetic.generate(root, TINY)
  return root


@pytest.fixture(scope="session")
def tiny_config() -> synthetic.SyntheticConfig:
  return dataclasses.replace(TINY)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict:
  """Environment for command-line runs started by tests: CPU, and one persistent compilation cache shared
  by them all, so that each program is compiled by the first run that needs it only."""
  cache = str(tmp_path_factory.mktemp("cli_jax_cache"))
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
