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


def test_off_with_several_cpu_devices(tmp_path):
  """The suite's 4 forced host devices: a cached multi-device step can deadlock there (jaxlib 0.10.2)."""
  assert jax.local_device_count() == 4
  assert not compile_cache.safe_here()
  assert compile_cache.enable(str(tmp_path / "cache")) is None and not os.path.exists(tmp_path / "cache")


def test_a_second_run_loads_the_compiled_programs(tmp_path, tiny_root):
  """Two runs of the same tiny job on one CPU device: the first fills the cache; the second neither adds
  nor rewrites an entry (a miss would compile and write its entry again)."""
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             FMJAX_DATA_DIR=str(tmp_path / "data"))
  entries = []
  for run in ("first", "second"):
    subprocess.run([sys.executable, os.path.join(REPO, "launch", "main.py"), "--config=configs/fmformer.py:tiny",
                    f"--workdir={tmp_path / run}", f"--config.compile_cache={cache}", f"--config.data.root={tiny_root}",
                    "--config.num_train_steps=2", "--config.model.image_size=32"],
                   cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=300)
    entries.append({name: os.stat(cache / name).st_mtime_ns for name in os.listdir(cache)})
    with open(tmp_path / run / "summary.json") as f:
      assert json.load(f)["first_step_s"] > 0
  assert entries[0], "the first run cached nothing"
  assert entries[1] == entries[0]
