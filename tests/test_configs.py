"""The shared data config resolves to a prepared dataset: the synthetic default or a given root."""

import dataclasses
import os
import sys

import numpy as np

import handmade
from fmjax.data import synthetic, tfds_fmf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
import common  # noqa: E402


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
  assert said[0].startswith(f"generating the synthetic furnace (2 recordings of 900 s at 1 fps, 32x32; 1800 frames) "
                            f"into {prepared.root}")
  assert said[1].startswith(f"preparing {prepared.root} (2 recordings, 1800 frames) as array_record in {tmp_path}")
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
