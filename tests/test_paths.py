"""User paths: relative to the current directory and `~` work for the config, the data commands and $FMJAX_DATA_DIR."""

import json
import os
import subprocess
import sys

import pytest

from fmjax.data import tfds_fmf
from fmjax.runtime import errors, paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import align, fmformer, pretrain, transfer


def test_resolve(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert paths.resolve("runs/a") == str(tmp_path / "runs" / "a")
  assert paths.resolve("~/data") == str(tmp_path / "home" / "data")
  assert paths.resolve("/abs/x/../y") == "/abs/y"
  assert paths.resolve("") == ""


@pytest.mark.parametrize("module", [fmformer, pretrain, align, transfer])
def test_resolve_config_turns_every_path_key_absolute(module, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = module.get_config("tiny")
  config.init_from, config.data.root, config.data.data_dir = "runs/x", "../fmf", ""
  resolved = paths.resolve_config(config)
  assert resolved.init_from == str(tmp_path / "runs" / "x")
  assert resolved.data.root == os.path.join(os.path.dirname(tmp_path), "fmf")
  assert resolved.data.data_dir == ""  # the default stays the default
  assert config.init_from == "runs/x"  # the caller's config is left alone
  assert resolved.is_locked


def test_data_dir_from_a_relative_environment_variable(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("FMJAX_DATA_DIR", "cache")
  assert tfds_fmf.default_data_dir() == str(tmp_path / "cache")
  monkeypatch.delenv("FMJAX_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert tfds_fmf.default_data_dir() == str(tmp_path / ".cache" / "fmjax" / "tfds")


def test_an_unusable_workdir_is_one_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(errors.WorkdirError, match=f"workdir {blocker}/run cannot be created or written"):
    paths.ensure_writable_dir(str(blocker / "run"))
  assert paths.ensure_writable_dir(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")
  assert os.listdir(tmp_path / "new" / "run") == []  # the write test leaves nothing behind


def run_data(cwd, *args, home=None) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "HOME": str(home or cwd)}
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "data.py"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_data_commands_take_relative_and_home_paths(tmp_path):
  """synth --out REL, validate REL, prepare ~/REL --data_dir REL, run from another folder; then errors."""
  made = run_data(tmp_path, "synth", "--out", "furnace", "--recordings", "1", "--duration_s", "700", "--fps", "1")
  assert made.returncode == 0, made.stderr
  assert os.path.isfile(tmp_path / "furnace" / "synthetic.json")
  assert f"wrote {tmp_path / 'furnace'}" in made.stdout
  checked = run_data(tmp_path, "validate", "furnace")
  assert checked.returncode == 0 and checked.stdout.startswith("furnace_01: 700 frames"), checked.stderr
  prepared = run_data(tmp_path, "prepare", "~/furnace", "--data_dir", "cache")
  assert prepared.returncode == 0, prepared.stderr
  info = json.loads(prepared.stdout.strip().splitlines()[-1])
  assert info["data_dir"].startswith(str(tmp_path / "cache")) and info["frames"] == 700
  again = run_data(tmp_path, "synth", "--out", "furnace")
  assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'furnace'}: folder exists and is not empty"), again.stderr
  missing = run_data(tmp_path, "validate", "nowhere")
  assert missing.returncode == 1 and missing.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such folder"
