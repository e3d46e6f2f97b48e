"""The prepared root's cached reduced frames: the same numbers as reducing each sample's frames."""

import os

import numpy as np
import pytest

from fmjax.data import downsampled, fmf_format, pipeline, tfds_fmf
from fmjax.runtime import errors


@pytest.fixture(scope="module")
def private_data_dir(tiny_root, tmp_path_factory) -> str:
  """The tiny furnace prepared once for this module: its tests damage and remove the cache they test."""
  data_dir = str(tmp_path_factory.mktemp("tfds_downsampled"))
  tfds_fmf.load(tiny_root, data_dir)
  return data_dir


@pytest.fixture()
def prepared(tiny_root, private_data_dir):
  """The prepared furnace without any reduced-frame cache, opened afresh."""
  opened = tfds_fmf.load(tiny_root, private_data_dir)
  for name in os.listdir(opened.data_dir):
    if name.startswith("downsampled"):
      os.remove(os.path.join(opened.data_dir, name))
  return opened


def _by_hand(frames: np.ndarray, f: int) -> np.ndarray:
  """Mean of each f x f block, rounded half to even, as uint8 (32x32 -> 8x8 at 4)."""
  t, h, w, c = frames.shape
  out = np.zeros((t, h // f, w // f, c))
  for i in range(h // f):
    for j in range(w // f):
      out[:, i, j] = frames[:, i * f:(i + 1) * f, j * f:(j + 1) * f].astype(np.float64).sum(axis=(1, 2)) / (f * f)
  return np.round(out).astype(np.uint8)


def test_cache_holds_every_frame_block_averaged(tiny_root, prepared):
  downsampled.ensure(prepared, 4)
  assert os.path.isfile(downsampled.path(prepared, 4))
  for rec in prepared.recordings:
    source = fmf_format.load_recording(tiny_root, rec.name).frames
    cached = rec.frames.downsampled[4]
    assert cached.shape == (len(source), 8, 8, 3) and cached.dtype == np.uint8
    np.testing.assert_array_equal(cached, _by_hand(np.asarray(source), 4))


def test_sequences_from_the_cache_equal_sequences_reduced_per_sample(tiny_root, prepared):
  spec = dict(num_steps=4, step_seconds=2, frames_per_step=2, downsample_factor=4)
  downsampled.ensure(prepared, 4)
  in_memory = fmf_format.load_recording(tiny_root, prepared.recordings[1].name)  # no cache: reduced per sample
  ends = pipeline.valid_sequence_ends(in_memory, np.arange(0, in_memory.num_frames, 97), 4, 2)
  assert len(ends) > 5
  for i in ends:
    a = pipeline.step_sequence(prepared.recordings[1], int(i), **spec)
    b = pipeline.step_sequence(in_memory, int(i), **spec)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_cache_is_written_once_then_reused(tiny_root, prepared):
  downsampled.ensure(prepared, 4)
  stamp = os.stat(downsampled.path(prepared, 4)).st_mtime_ns
  again = tfds_fmf.load(tiny_root, os.path.dirname(os.path.dirname(os.path.dirname(prepared.data_dir))))
  downsampled.ensure(again, 4)
  assert os.stat(downsampled.path(again, 4)).st_mtime_ns == stamp
  assert isinstance(again.recordings[0].frames.downsampled[4], np.memmap)


def test_a_damaged_cache_is_said_and_rebuilt(tiny_root, prepared, capsys):
  downsampled.ensure(prepared, 4)
  file = downsampled.path(prepared, 4)
  with open(file, "r+b") as f:
    f.truncate(os.path.getsize(file) // 2)
  again = tfds_fmf.load(tiny_root, os.path.dirname(os.path.dirname(os.path.dirname(prepared.data_dir))))
  downsampled.ensure(again, 4)
  assert "rebuilding it" in capsys.readouterr().err
  np.testing.assert_array_equal(again.recordings[0].frames.downsampled[4],
                                _by_hand(np.asarray(again.recordings[0].frames[:]), 4))


def test_a_crash_while_building_leaves_no_file(prepared, monkeypatch):
  def crash(*args):
    raise KeyboardInterrupt
  monkeypatch.setattr(downsampled, "_compute", crash)
  with pytest.raises(KeyboardInterrupt):
    downsampled.ensure(prepared, 4)
  assert not [f for f in os.listdir(prepared.data_dir) if f.startswith("downsampled")]


def test_a_read_only_data_dir_reduces_in_memory(prepared, monkeypatch, capsys):
  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(np.lib.format, "open_memmap", refuse)
  downsampled.ensure(prepared, 2)
  assert "reducing the frames in memory" in capsys.readouterr().err
  assert not os.path.exists(downsampled.path(prepared, 2))
  np.testing.assert_array_equal(prepared.recordings[0].frames.downsampled[2],
                                _by_hand(np.asarray(prepared.recordings[0].frames[:]), 2))


def test_a_factor_that_does_not_divide_the_frames_is_a_config_error(prepared):
  with pytest.raises(errors.ConfigError, match="input.downsample=3 does not divide the frames' size 32x32"):
    downsampled.ensure(prepared, 3)


def test_no_space_left_is_a_data_error_naming_the_file_and_keeps_nothing(prepared, monkeypatch):
  def full(prepared, factor, out):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(downsampled, "_compute", full)
  with pytest.raises(errors.DataError, match=f"^{prepared.data_dir}: no space left on device while writing the reduced "
                     f"frames {os.path.basename(downsampled.path(prepared, 4))} \\(about 0.5 MB needed, .* free\\); "
                     "nothing half-written was kept"):
    downsampled.ensure(prepared, 4)
  assert not [name for name in os.listdir(prepared.data_dir) if name.startswith("downsampled")]


def test_a_killed_builds_temporary_file_is_removed_by_the_next(prepared):
  left = f"{downsampled.path(prepared, 4)}.tmp-999999"
  with open(left, "wb") as f:
    f.write(b"half")
  downsampled.ensure(prepared, 4)
  assert not os.path.exists(left) and os.path.isfile(downsampled.path(prepared, 4))
