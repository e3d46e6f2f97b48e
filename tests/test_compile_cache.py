"""JAX's persistent compilation cache: where it goes, where it stays off, and a second run that hits it."""

import json
import os
import subprocess
import sys

import jax

from fmjax.train import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_directory_follows_the_data_dir(monkeypatch, tmp_path):
  monkeypatch.delenv("FMJAX_DATA_DIR", raising=False)
  assert compile_cache.directory("") == os.path.expanduser("~/.cache/fmjax/jax_cache")
  monkeypatch.setenv("FMJAX_DATA_DIR", str(tmp_path / "data"))
  assert compile_cache.directory("") == str(tmp_path / "jax_cache")
  assert compile_cache.directory(str(tmp_path / "mine")) == str(tmp_path / "mine")
  assert compile_cache.directory("off") is None


def test_off_with_several_cpu_devices_and_said_once(tmp_path, four_devices, monkeypatch, capsys):
  """The suite's 4 forced host devices: a cached multi-device step can deadlock there (jaxlib 0.10.2), so the
  cache stays off, and the first run of the process that asks for it says why."""
  assert jax.local_device_count() == 4
  assert compile_cache.hazard()
  monkeypatch.setattr(compile_cache, "_told", set())
  for _ in range(2):
    assert compile_cache.enable(str(tmp_path / "cache")) is None and not os.path.exists(tmp_path / "cache")
  said = capsys.readouterr().err.splitlines()
  assert said == [f"compilation cache off: {compile_cache.hazard()}"] and "4 CPU devices" in said[0]
  assert compile_cache.enable("off") is None and capsys.readouterr().err == ""  # none asked for: nothing to say


def test_one_device_of_several_may_cache(four_devices):
  """A run of num_devices=1 among the 4 forced devices has no collectives to deadlock: the cache is on."""
  assert compile_cache.hazard(1) is None and compile_cache.hazard(2) and compile_cache.hazard()


def test_a_second_run_loads_the_compiled_programs(tmp_path, cli_env):
  """Two runs of the same tiny job on one of the 4 forced CPU devices, with a fresh cache: the first compiles
  and writes its programs, the second loads every one of them and compiles none (JAX's own cache events)."""
  cache = tmp_path / "cache"
  env = cli_env  # fmjax's own setting names the cache (no JAX variable does); its minimum compile time of 0 s stands
  counts, summaries = [], []
  for run in ("first", "second"):
    result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "cache_events.py"),
                             "--config=configs/fmformer.py:tiny", f"--workdir={tmp_path / run}",
                             f"--config.compile_cache={cache}", "--config.num_devices=1", "--config.num_train_steps=2"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    counts.append(json.loads(result.stderr.strip().splitlines()[-1]))
    with open(tmp_path / run / "summary.json") as f:
      summaries.append(json.load(f))
  assert counts[0]["hits"] == 0 and counts[0]["writes"] >= 1, counts
  assert counts[1]["writes"] == 0 and counts[1]["hits"] >= counts[0]["writes"], counts
  assert os.listdir(cache)
  assert summaries[1]["acc"] == summaries[0]["acc"] and summaries[1]["steps"] == 2
