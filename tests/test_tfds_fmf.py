"""Preparing an FMF root into array_record: exact frames, index, caching, no TensorFlow."""

import os
import pickle
import shutil
import sys

import numpy as np
import pytest

import handmade
from fmjax.data import fmf_format, pipeline, tfds_fmf


@pytest.fixture(scope="module")
def prepared(tiny_root, data_dir):
  return tfds_fmf.load(tiny_root, data_dir)  # prepared by conftest: read here, never changed


def test_records_equal_the_source_frames(tiny_root, prepared):
  for k, name in enumerate(fmf_format.list_recordings(tiny_root)):
    want, got = fmf_format.load_recording(tiny_root, name), prepared.recordings[k]
    idx = np.random.default_rng(k).integers(0, want.num_frames, 40)
    np.testing.assert_array_equal(got.frames[idx], want.frames[idx])
    np.testing.assert_array_equal(got.masks[idx], want.masks[idx])
    for field in ("labels", "frame_seconds", "current", "current_seconds"):
      np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    assert got.start_time == want.start_time
    assert prepared.events(k) == fmf_format.load_events(tiny_root, name)


def test_splits_match_the_json_files(tiny_root, prepared):
  counts = {r.name: r.num_frames for r in prepared.recordings}
  for split in fmf_format.SPLITS:
    per_rec = fmf_format.load_split(tiny_root, split, counts)
    want = np.concatenate([np.stack([np.full(len(per_rec[n]), k), per_rec[n]], 1) for k, n in enumerate(counts)])
    np.testing.assert_array_equal(prepared.split(split), want)


def test_clips_from_records_equal_clips_from_memory(tiny_root, prepared):
  mem = fmf_format.load_recording(tiny_root, "furnace_02")
  for i in (0, 3, 777):
    a = pipeline.fmformer_clip(prepared.recordings[1], i, num_frames=10, current_seconds=120)
    b = pipeline.fmformer_clip(mem, i, num_frames=10, current_seconds=120)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_storage_is_about_the_raw_frames_and_no_tensorflow(prepared):
  raw = sum(r.num_frames for r in prepared.recordings) * int(np.prod(prepared.index["image_shape"])) * 4
  assert tfds_fmf.storage_bytes(prepared) < 1.1 * raw + 2e6  # frames + masks, no per-clip copies
  assert "tensorflow" not in sys.modules


def test_prepared_once_then_reused(tiny_root, prepared):
  info = os.path.join(prepared.data_dir, "dataset_info.json")
  stamp = os.stat(info).st_mtime_ns
  again = tfds_fmf.load(tiny_root, os.path.dirname(os.path.dirname(os.path.dirname(prepared.data_dir))))
  assert again.data_dir == prepared.data_dir and os.stat(info).st_mtime_ns == stamp


def test_views_survive_pickling_for_worker_processes(prepared):
  rec = prepared.recordings[0]
  clone = pickle.loads(pickle.dumps(rec))
  np.testing.assert_array_equal(clone.frames[[1, 50, 2]], rec.frames[[1, 50, 2]])
  np.testing.assert_array_equal(clone.masks[7], rec.masks[7])


def test_changed_files_get_a_new_fingerprint(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"))
  before = tfds_fmf.fingerprint(root)
  fmf_format.write_splits(root, {"test": {"hand": [9, 10, 11]}})
  assert tfds_fmf.fingerprint(root) != before


def test_bad_root_fails_before_writing(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"))
  os.remove(fmf_format.current_path(root, "hand"))
  data_dir = str(tmp_path / "data")
  with pytest.raises(fmf_format.FmfFormatError, match="currents/hand.csv: missing file"):
    tfds_fmf.load(root, data_dir)
  assert not os.path.exists(os.path.join(data_dir, "fmf_frames"))
