"""The shared data config resolves to a prepared dataset: the synthetic default or a given root."""

import dataclasses
import importlib
import os
import sys

import handmade
import numpy as np

from fmjax.data import synthetic, tfds_fmf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "configs"))
import common


def test_default_knobs_are_the_synthetic_defaults():
  assert common.get_config().synthetic.to_dict() == dataclasses.asdict(synthetic.SyntheticConfig())


def test_empty_root_generates_and_prepares_the_synthetic_furnace(tmp_path, capfd):
  data = common.get_config("tiny")
  data.data_dir = str(tmp_path)
  prepared = tfds_fmf.load_from_config(data)
  assert prepared.root.startswith(str(tmp_path / "synthetic"))
  assert [r.name for r in prepared.recordings] == ["furnace_01", "furnace_02"]
  assert prepared.recordings[0].frames[0].shape == (32, 32, 3)
  said = [line for line in capfd.readouterr().err.splitlines() if "first use only" in line]
  assert said[0].startswith(f"generating the synthetic furnace (2 recordings of 1200 s at 1 fps, 32x32; 2400 frames) "
                            f"into {prepared.root}")
  assert said[1].startswith(f"preparing {prepared.root} (2 recordings, 2400 frames, 0.0 GB) as array_record in "
                            f"{tmp_path}")
  assert len(said) == 2
  tfds_fmf.load_from_config(data)  # a second use is silent
  assert "first use only" not in capfd.readouterr().err


def test_a_given_root_is_used_as_is(tmp_path):
  data = common.get_config()
  data.root = handmade.write_root(str(tmp_path / "hand"))
  data.data_dir = str(tmp_path / "cache")
  prepared = tfds_fmf.load_from_config(data)
  np.testing.assert_array_equal(prepared.recordings[0].frames[[3, 4]], handmade.recording().frames[[3, 4]])
  assert not os.path.exists(tmp_path / "cache" / "synthetic")


JOB_CONFIGS = {"fmformer": ("", "seg", "video", "current", "accel", "tiny", "seg,tiny", "video,tiny", "current,tiny",
                            "accel,tiny", "seg,accel"),
               "pretrain": ("", "full", "tiny"), "align": ("", "lag0", "alignvsr", "tiny", "alignvsr,tiny"),
               "transfer": ("", "tiny")}


def _flat_keys(config, prefix: str = "") -> set[str]:
  keys = set()
  for key, value in config.items():
    keys.add(prefix + key)
    if hasattr(value, "items") and key not in ("model", "loss", "evals"):  # job-specific contents
      keys |= _flat_keys(value, f"{prefix}{key}.")
  return keys


def test_every_job_config_has_every_trainer_key_and_each_evaluator_a_type():
  required = _flat_keys(common.trainer_config("any"))
  for job, variants in JOB_CONFIGS.items():
    module = importlib.import_module(f"configs.{job}")
    for variant in variants:
      config = module.get_config(variant)
      assert not required - _flat_keys(config), (job, variant, sorted(required - _flat_keys(config)))
      assert config.evals and all("type" in settings for settings in config.evals.values()), (job, variant)


def test_the_tiny_overlay_is_shared():
  tiny = common.tiny(common.trainer_config("any"))
  for job in ("fmformer", "pretrain", "align"):
    config = importlib.import_module(f"configs.{job}").get_config("tiny")
    for key in ("num_train_steps", "log_every", "checkpoint_every"):
      assert config[key] == tiny[key], (job, key)
    assert config.input.batch_size == tiny.input.batch_size
    assert config.data.synthetic.duration_s == tiny.data.synthetic.duration_s
