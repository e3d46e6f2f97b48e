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


def test_empty_root_generates_and_prepares_the_synthetic_furnace(tmp_path):
  data = common.get_config("tiny")
  data.data_dir = str(tmp_path)
  prepared = tfds_fmf.load_from_config(data)
  assert prepared.root.startswith(str(tmp_path / "synthetic"))
  assert [r.name for r in prepared.recordings] == ["furnace_01", "furnace_02"]
  assert prepared.recordings[0].frames[0].shape == (32, 32, 3)


def test_a_given_root_is_used_as_is(tmp_path):
  data = common.get_config()
  data.root = handmade.write_root(str(tmp_path / "hand"))
  data.data_dir = str(tmp_path / "cache")
  prepared = tfds_fmf.load_from_config(data)
  np.testing.assert_array_equal(prepared.recordings[0].frames[[3, 4]], handmade.recording().frames[[3, 4]])
  assert not os.path.exists(tmp_path / "cache" / "synthetic")
