"""The official single-file form -> the V2 layout (fmjax.data.single_file, `launch/data.py convert`): an exact
round trip of frames, masks, splits and timestamps, the current's resampling, one named error line for
each kind of bad input, and no trace of a conversion that did not finish."""

import dataclasses
import os

import h5py
import numpy as np
import pytest
from test_fmf_format import _cli, _replace_h5

from fmjax.data import fmf_format, single_file, synthetic, validate
from fmjax.runtime import errors

# 2 x 800 frames of 16x16 at 2 fps (smaller hot spots than the defaults, which do not fit 16 pixels)
SMALL = synthetic.SyntheticConfig(recordings=2, duration_s=400, fps=2.0, image_size=16, lead_min_s=60,
                                  lead_max_s=80, anomaly_min_s=60, anomaly_max_s=100, min_gap_s=30,
                                  spot_radius_min=3, spot_radius_max=5)
N, H, W = 10, 6, 8  # the hand-made file: non-square, so a swapped W and H shows


def _splits(root: str) -> dict[str, dict[str, list[int]]]:
  """{split: {name: frame indices}} of a V2 root."""
  counts = {name: fmf_format.load_recording(root, name, lazy=True).num_frames
            for name in fmf_format.list_recordings(root)}
  return {split: {name: idx.tolist() for name, idx in fmf_format.load_split(root, split, counts).items()}
          for split in fmf_format.SPLITS}


def _to_single_files(root: str, folder: str) -> dict[str, np.ndarray]:
  """Writes each recording of V2 `root` as folder/<name>.mat; the current of a frame is the first row of its
  second. Returns those per-frame currents by name."""
  test = _splits(root)["test"]
  per_frame = {}
  for name in fmf_format.list_recordings(root):
    rec = fmf_format.load_recording(root, name)
    index = np.zeros(rec.num_frames)
    index[test[name]] = 1
    per_frame[name] = rec.current[fmf_format.ROWS_PER_SECOND * rec.frame_seconds]
    masks = rec.masks.labels if isinstance(rec.masks, fmf_format.FrameMasks) else rec.masks
    single_file.write_single_file(os.path.join(folder, f"{name}.mat"), rec.frames, per_frame[name], masks, index)
  return per_frame


@pytest.fixture(scope="module", params=["pixel-level", "class-level"])
def synthetic_root(request, tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp(request.param) / "root")
  synthetic.generate(root, dataclasses.replace(SMALL, class_level=request.param == "class-level"))
  return root


def test_round_trip_is_exact(synthetic_root, tmp_path):
  src = str(tmp_path / "single")
  os.makedirs(src)
  per_frame = _to_single_files(synthetic_root, src)
  with h5py.File(os.path.join(src, "furnace_01.mat"), "r") as f:  # the official layout, as h5py reads it
    assert f["video"].shape == (800, 3, 16, 16) and f["current"].shape == (800, 3)
    assert f["train_test_index"].shape == (800, 1)
  out = str(tmp_path / "v2")
  assert SMALL.start_time == single_file.DEFAULT_START
  summaries = single_file.convert(src, out, fps=SMALL.fps)
  assert [(s["name"], s["frames"], s["seconds"]) for s in summaries] == [("furnace_01", 800, 400),
                                                                         ("furnace_02", 800, 400)]
  assert _splits(out) == _splits(synthetic_root)
  for name in fmf_format.list_recordings(synthetic_root):
    want, got = fmf_format.load_recording(synthetic_root, name), fmf_format.load_recording(out, name)
    np.testing.assert_array_equal(got.frames, want.frames)
    assert isinstance(got.masks, fmf_format.FrameMasks) == isinstance(want.masks, fmf_format.FrameMasks)
    np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.frame_seconds, want.frame_seconds)
    assert got.start_time == want.start_time
    # at 2 fps, second s's rows (s and s + 0.5 s) fall on frames 2s and 2s + 1: the per-frame values there
    np.testing.assert_array_equal(got.current_seconds, want.current_seconds)
    np.testing.assert_array_equal(got.current[0::2], per_frame[name][0::2])
    np.testing.assert_array_equal(got.current[1::2], per_frame[name][1::2])


def _hand_file(path: str, **fields) -> str:
  """A single-file recording of N frames of H x W: pixel (k, h, w, c) = 7k + 3h + 5w + c, a 0/255 mask on
  frames 6.., current 6000 + 10 k * (1, 2, 3), frames 7.. in test; `fields` replace what h5py reads."""
  k, h, w, c = np.meshgrid(np.arange(N), np.arange(H), np.arange(W), np.arange(3), indexing="ij")
  masks = np.zeros((N, H, W), np.uint8)
  masks[6:, 1, 2] = 255
  current = 6000 + 10 * np.arange(N)[:, None] * np.array([1, 2, 3])
  single_file.write_single_file(path, (7 * k + 3 * h + 5 * w + c) % 256, current, masks, np.arange(N) >= 7)
  if fields:
    with h5py.File(path, "r") as f:
      datasets = {key: f[key][()] for key in f}
    _replace_h5(path, **{key: value for key, value in {**datasets, **fields}.items() if value is not None})
  return path


@pytest.mark.parametrize("fps,labels", [(0.5, "masks"), (4.0, "per frame")])
def test_timestamps_and_current_follow_the_frame_rate(tmp_path, fps, labels):
  src = str(tmp_path / "single")
  os.makedirs(src)
  fields = {"train_test_index": (np.arange(N) >= 7).reshape(1, N)}  # MATLAB's (N, 1) column
  if labels == "per frame":  # 0/255, MATLAB's (N, 1) column
    fields["label"] = np.where(np.arange(N) >= 6, 255, 0).astype(np.uint8).reshape(1, N)
  _hand_file(os.path.join(src, "hand.mat"), **fields)
  single_file.convert(src, str(tmp_path / "v2"), fps=fps, start="2024-01-02 03:04:05")
  rec = fmf_format.load_recording(str(tmp_path / "v2"), "hand")
  assert rec.start_time == np.datetime64("2024-01-02 03:04:05")
  np.testing.assert_array_equal(rec.frame_seconds, np.floor(np.arange(N) / fps))
  seconds = int(np.ceil(N / fps))  # 20 s at 0.5 fps, 3 s at 4 fps
  np.testing.assert_array_equal(rec.current_seconds, np.repeat(np.arange(seconds), 2))
  frame_at = np.minimum(np.arange(2 * seconds) / 2 * fps, N - 1)  # each row's (fractional) frame; held at the last
  np.testing.assert_allclose(rec.current, 6000 + 10 * frame_at[:, None] * np.array([1, 2, 3]), atol=0.005)
  k, h, w, c = np.meshgrid(np.arange(N), np.arange(H), np.arange(W), np.arange(3), indexing="ij")
  np.testing.assert_array_equal(rec.frames, (7 * k + 3 * h + 5 * w + c) % 256)
  assert isinstance(rec.masks, fmf_format.FrameMasks) == (labels == "per frame")
  masks = np.asarray(rec.masks)
  assert masks.shape == (N, H, W) and masks.max() == 1 and masks[6:, 1, 2].all()  # 255 -> 1
  np.testing.assert_array_equal(rec.labels, np.arange(N) >= 6)
  assert _splits(str(tmp_path / "v2"))["test"]["hand"] == [7, 8, 9]


def test_cli_converts_into_a_valid_root(tmp_path):
  src = str(tmp_path / "single")
  os.makedirs(src)
  for name in ("set1", "set2"):
    _hand_file(os.path.join(src, f"{name}.mat"))
  out = str(tmp_path / "v2")
  result = _cli("convert", src, "--out", out, "--fps", "2", "--start", "2024-01-02 03:04:05")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 3 and lines[0].startswith("set1: 10 frames 6x8, 5 s") and lines[1].startswith("set2: ")
  assert "resampled from one reading per frame" in lines[2] and "two rows per second" in lines[2]
  assert _cli("validate", out).returncode == 0
  assert fmf_format.load_recording(out, "set2").start_time == np.datetime64("2024-01-02 03:04:05")


BAD_INPUTS = {  # case: (fields h5py reads instead (None: left out), words the error line holds)
    "missing field": ({"train_test_index": None}, ["missing field 'train_test_index'", "found ['current', "]),
    "mismatched N": ({"current": np.zeros((N - 1, 3))}, ["'video' 10, 'current' 9, 'label' 10"]),
    "label neither masks nor per frame": ({"label": np.zeros((N, H, W), np.uint8)}, ["'label' has shape (10, 6, 8)"]),
    "video shape": ({"video": np.zeros((N, W, H), np.uint8)}, ["'video' has shape (10, 8, 6)"]),
    "current shape": ({"current": np.zeros((3, N))}, ["'current' has shape (3, 10)"]),
    "split value": ({"train_test_index": np.full((N, 1), 2.0)}, ["'train_test_index' holds 2.0 at frame 0"]),
    "not hdf5": ("MATLAB 5.0 MAT-file", ["not a MATLAB v7.3 (HDF5) file", "-v7.3"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input_prints_one_error_line_and_writes_nothing(tmp_path, case):
  fields, words = BAD_INPUTS[case]
  src = str(tmp_path / "single")
  os.makedirs(src)
  path = os.path.join(src, "set1.mat")
  if isinstance(fields, str):
    with open(path, "w") as f:
      f.write(fields)
  else:
    _hand_file(path, **fields)
  out = str(tmp_path / "v2")
  result = _cli("convert", src, "--out", out, "--fps", "2")
  assert result.returncode == 1 and result.stdout == ""
  (line,) = [text for text in result.stderr.splitlines() if text.strip()]
  assert line.startswith(f"error: {path}: ")
  assert all(w in line for w in words), line
  assert not os.path.exists(out) and not os.path.exists(f"{out}.partial")


def test_cli_needs_fps_and_a_folder_of_mat_files(tmp_path):
  src, out = str(tmp_path / "single"), str(tmp_path / "v2")
  os.makedirs(src)
  result = _cli("convert", src, "--out", out)
  assert result.returncode == 1 and result.stderr.startswith("error: convert needs --fps")
  result = _cli("convert", src, "--out", out, "--fps", "2")
  assert result.returncode == 1 and result.stderr.startswith(f"error: {src}: holds no .mat file")
  with pytest.raises(errors.ConfigError, match="fps must be a number > 0"):
    single_file.convert(src, out, fps=0)
  assert not os.path.exists(out)


def test_a_killed_conversion_leaves_nothing_a_rerun_trips_over(tmp_path, monkeypatch, capfd):
  src, out = str(tmp_path / "single"), str(tmp_path / "v2")
  os.makedirs(src)
  for name in ("set1", "set2"):
    _hand_file(os.path.join(src, f"{name}.mat"))
  write = single_file._write

  def interrupted(source, *args):  # the conversion stops after its first recording
    if source.name == "set2":
      raise KeyboardInterrupt
    return write(source, *args)

  monkeypatch.setattr(single_file, "_write", interrupted)
  with pytest.raises(KeyboardInterrupt):
    single_file.convert(src, out, fps=2)
  assert not os.path.exists(out) and not os.path.exists(f"{out}.partial")
  monkeypatch.setattr(single_file, "_write", write)
  os.makedirs(f"{out}.partial/videos")  # what a SIGKILL leaves
  with open(f"{out}.partial/videos/set1.mat", "w") as f:
    f.write("half a video")
  single_file.convert(src, out, fps=2)
  assert "left by a run that did not finish" in capfd.readouterr().err
  assert not os.path.exists(f"{out}.partial")
  assert [s["name"] for s in validate.validate_root(out)] == ["set1", "set2"]
