"""FMF layout: exact round trip, h5py's axis order, and one named error for every kind of bad input."""

import json
import os
import subprocess
import sys

import h5py
import handmade
import numpy as np
import pytest

from fmjax.data import fmf_format, ground_truth, synthetic, validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def root(tmp_path):
  return handmade.write_root(str(tmp_path / "root"))


def test_round_trip_is_exact(root):
  want = handmade.recording()
  got = fmf_format.load_recording(root, "hand")
  for field in ("frames", "masks", "labels", "frame_seconds", "current", "current_seconds"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  assert got.start_time == np.datetime64("2023-05-10 21:33:27")
  assert got.frames.dtype == np.uint8 and got.current.dtype == np.float32
  assert got.frame_seconds.dtype == np.int64 and got.current_seconds.dtype == np.int64


def test_files_have_the_benchmark_layout(root):
  with h5py.File(fmf_format.video_path(root, "hand"), "r") as f:
    assert f["data"].shape == (handmade.T, 3, handmade.W, handmade.H)  # [T, C, W, H] as h5py sees it
    assert f["label"].shape == (handmade.T, handmade.W, handmade.H)
    assert f["data"][5, 2, 7, 1] == handmade.pixel_value(5, 1, 7, 2)  # [t, c, w, h] = pixel (t, h, w, c)
    assert f["label"][9, 2, 1] == 1
  with open(fmf_format.video_path(root, "hand"), "rb") as f:
    assert f.read(10) == b"MATLAB 7.3"
  with open(fmf_format.current_path(root, "hand")) as f:
    lines = f.read().splitlines()
  assert len(lines) == 21 and lines[1] == "2023-05-10 21:33:27,6000.00,6100.00,6200.00"
  assert lines[2].startswith("2023-05-10 21:33:27,") and lines[3].startswith("2023-05-10 21:33:28,")
  with open(fmf_format.timestamps_path(root, "hand")) as f:
    assert f.read().splitlines()[1:4] == ["2023-05-10 21:33:30"] * 2 + ["2023-05-10 21:33:31"]
  with open(fmf_format.split_path(root, "test")) as f:
    assert json.load(f) == {"hand.mat": [8, 9, 10, 11]}


def test_lazy_frames_index_like_arrays(root):
  lazy = fmf_format.load_recording(root, "hand", lazy=True)
  eager = handmade.recording()
  idx = np.array([[5, 0, 5], [11, 3, 2]])  # unordered, repeated, 2-D
  np.testing.assert_array_equal(lazy.frames[idx], eager.frames[idx])
  np.testing.assert_array_equal(lazy.masks[9], eager.masks[9])
  np.testing.assert_array_equal(lazy.frames[2:7], eager.frames[2:7])
  assert lazy.frames.shape == (handmade.T, handmade.H, handmade.W, 3)


def test_validate_root_summarises(root):
  (s,) = validate.validate_root(root)
  assert s["frames"] == 12 and s["image"] == [6, 8] and s["train"] == 8 and s["test"] == 4
  assert s["abnormal_share"] == pytest.approx(4 / 12, abs=1e-4)


def _rewrite(path, edit):
  with open(path) as f:
    lines = f.read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(edit(lines)) + "\n")


def _replace_h5(path, **datasets):
  os.remove(path)
  with h5py.File(path, "w") as f:
    for key, value in datasets.items():
      f[key] = value


def _set(lines, k, value):
  lines[k] = value
  return lines


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def _event(**changes):
  """The handmade recording runs 10 s of current: an event with these keys changed (None: removed)."""
  event = {"current_onset_s": 1.0, "visual_onset_s": 4.0, "lead_s": 3.0, "split": "test", **changes}
  return json.dumps([{k: v for k, v in event.items() if v is not None}])


def _truth(path, **changes):
  """12 frames, 10 current seconds: truth arrays with these changed (None: removed)."""
  arrays = {"mist": np.zeros(12), "glare": np.zeros(12), "spot_radius": np.zeros(12), "steadiness": np.ones(10),
            **changes}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


BAD_INPUTS = {
    "missing current file": ("currents/hand.csv", lambda p: os.remove(p), "missing file"),
    "missing split file": ("train.json", lambda p: os.remove(p), "missing file"),
    "wrong dataset name": ("videos/hand.mat", lambda p: _replace_h5(
        p, frames=np.zeros((12, 3, 8, 6), np.uint8), label=np.zeros((12, 8, 6), np.uint8)), "no dataset 'data'"),
    "wrong data shape": ("videos/hand.mat", lambda p: _replace_h5(
        p, data=np.zeros((12, 8, 6), np.uint8), label=np.zeros((12, 8, 6), np.uint8)), "expected [T, 3, W, H]"),
    "label shape mismatch": ("videos/hand.mat", lambda p: _replace_h5(
        p, data=np.zeros((12, 3, 8, 6), np.uint8), label=np.zeros((12, 6, 8), np.uint8)), "'label' has shape"),
    "frames vs labels length": ("videos/hand.mat", lambda p: _replace_h5(
        p, data=np.zeros((12, 3, 8, 6), np.uint8), label=np.zeros((11, 8, 6), np.uint8)), "length mismatch"),
    "frames vs timestamps length": ("timestamps/hand.csv", lambda p: _rewrite(p, lambda rows: rows[:-1]),
                                    "length mismatch"),
    "odd current rows": ("currents/hand.csv", lambda p: _rewrite(p, lambda rows: rows[:-1]),
                         "odd number of current rows"),
    "rows not paired": ("currents/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 2, rows[2].replace("21:33:27", "21:33:26"))), "do not share a timestamp"),
    "current not increasing": ("currents/hand.csv", lambda p: _rewrite(
        p, lambda rows: rows[:1] + rows[3:5] + rows[1:3] + rows[5:]), "does not increase"),
    "frame timestamps decrease": ("timestamps/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 6, "2023-05-10 21:33:29")), "earlier than the previous frame"),
    "unparseable timestamp": ("timestamps/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 4, "10/05/2023 21:33")), "line 5: unparseable timestamp"),
    "unparseable current": ("currents/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 3, rows[3].split(",")[0] + ",abc,1,2")), "unparseable current value"),
    "nan current": ("currents/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 7, rows[7].split(",")[0] + ",nan,1,2")), "line 8: non-finite current"),
    "inf current": ("currents/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 7, rows[7].split(",")[0] + ",1,inf,2")), "non-finite current"),
    "frame outside current range": ("timestamps/hand.csv", lambda p: _rewrite(
        p, lambda rows: _set(rows, 12, "2023-05-10 21:33:50")), "outside the current's time range"),
    "split names unknown recording": ("test.json", lambda p: json.dump({"other.mat": [1]}, open(p, "w")),
                                      "not in videos/"),
    "split index out of range": ("test.json", lambda p: json.dump({"hand.mat": [3, 12]}, open(p, "w")),
                                 "frame index 12 out of range"),
    "not an hdf5 file": ("videos/hand.mat", lambda p: open(p, "w").write("MATLAB 5.0 MAT-file"), "not a MATLAB v7.3"),
    "splits overlap": ("test.json", lambda p: json.dump({"hand.mat": [6, 7, 8, 9, 10, 11]}, open(p, "w")),
                       "'hand.mat': 2 frame(s) are also in"),
    "events not json": ("events/hand.json", lambda p: _write(p, "[{'lead_s': 3}]"), "not valid JSON"),
    "events not a list": ("events/hand.json", lambda p: _write(p, '{"lead_s": 3}'), "holds a dict; expected a list"),
    "event lacks a key": ("events/hand.json", lambda p: _write(p, _event(lead_s=None)), "event 0 lacks ['lead_s']"),
    "event key of a wrong type": ("events/hand.json", lambda p: _write(p, _event(visual_onset_s="soon")),
                                  "visual_onset_s is 'soon'; expected a finite number"),
    "event of no split": ("events/hand.json", lambda p: _write(p, _event(split="val")), "split is 'val'"),
    "event onset outside the recording": ("events/hand.json", lambda p: _write(p, _event(visual_onset_s=10.5)),
                                          "visual_onset_s 10.5 lies outside the recording (0-10 s"),
    "truth unreadable": ("truth/hand.npz", lambda p: _write(p, "not an archive"), "cannot be read as a NumPy .npz"),
    "truth lacks an array": ("truth/hand.npz", lambda p: _truth(p, steadiness=None), "lacks array(s) ['steadiness']"),
    "truth of the wrong length": ("truth/hand.npz", lambda p: _truth(p, mist=np.zeros(11)),
                                  "'mist' has shape (11,) and dtype float64; expected one number per video frame"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_named_error(root, case):
  rel, corrupt, problem = BAD_INPUTS[case]
  corrupt(os.path.join(root, rel))
  with pytest.raises(fmf_format.FmfFormatError) as info:
    validate.validate_root(root)
  message = str(info.value)
  assert problem in message
  assert os.path.join(root, rel.split("/")[0]) in message  # names the file (or its folder)


def test_well_formed_events_and_truth_pass(root):
  _write(fmf_format.events_path(root, "hand"), _event())
  _truth(fmf_format.truth_path(root, "hand"))
  validate.validate_root(root)
  assert ground_truth.load_events(root, "hand", 10)[0]["lead_s"] == 3.0


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "data.py"), *args],
                        capture_output=True, text=True, timeout=300)


def test_cli_validate_bad_input_prints_one_line_and_fails(root):
  _rewrite(os.path.join(root, "currents/hand.csv"), lambda rows: rows[:-1])
  result = _cli("validate", root)
  assert result.returncode == 1
  assert result.stdout == ""
  (line,) = [text for text in result.stderr.splitlines() if text.strip()]
  assert line.startswith("error: ") and "currents/hand.csv" in line and "odd number" in line


def test_cli_prepare_refuses_overlapping_splits_before_writing(root, tmp_path):
  fmf_format.write_splits(root, {"train": {"hand": range(0, 10)}, "test": {"hand": range(3, 12)}})
  data_dir = tmp_path / "data"
  result = _cli("prepare", root, "--data_dir", str(data_dir))
  assert result.returncode == 1 and result.stdout == ""
  (line,) = [text for text in result.stderr.splitlines() if text.startswith("error:")]
  assert line == (f"error: {root}/test.json: 'hand.mat': 7 frame(s) are also in {root}/train.json (frames 3, 4, 5, "
                  "6, 7, ...); a frame belongs to one split")
  assert not data_dir.exists()


def test_cli_validate_good_input_prints_a_line_per_recording(tmp_path):
  root = handmade.write_root(str(tmp_path / "two"), names=("a", "b"))
  result = _cli("validate", root)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 2 and lines[0].startswith("a: 12 frames 6x8") and lines[1].startswith("b: ")


def test_cli_synth_refuses_to_overwrite(tmp_path):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  result = _cli("synth", "--out", str(out))
  assert result.returncode == 1 and "not empty" in result.stderr
  assert (out / "keep.txt").read_text() == "mine"


def test_cli_synth_writes_a_valid_root(tmp_path):
  out = str(tmp_path / "synth")
  result = _cli("synth", "--out", out, "--recordings", "1", "--duration_s", "500", "--fps", "0.5",
                "--lead_min_s", "60", "--lead_max_s", "90", "--seed", "3")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("furnace_01: 250 frames 64x64, 500 s")
  events = ground_truth.load_events(out, "furnace_01")
  assert events and all(60 <= e["lead_s"] <= 90 for e in events)
  assert len(validate.validate_root(out)) == 1


@pytest.mark.parametrize("preset", ["pixel-level", "class-level"])
def test_cli_synth_preset_sets_the_release_shape_and_flags_override_it(tmp_path, preset):
  out = str(tmp_path / preset)
  result = _cli("synth", "--out", out, "--preset", preset, "--recordings", "1", "--duration_s", "500",
                "--lead_min_s", "60", "--lead_max_s", "90")
  assert result.returncode == 0, result.stderr
  with open(os.path.join(out, "synthetic.json")) as f:
    knobs = json.load(f)
  assert knobs["fps"] == 25.0 and knobs["recordings"] == 1 and knobs["duration_s"] == 500  # preset, then flags
  assert knobs["class_level"] == (preset == "class-level")
  rec = fmf_format.load_recording(out, "furnace_01", lazy=True)
  assert rec.num_frames == 12500
  assert isinstance(rec.masks, fmf_format.FrameMasks) == (preset == "class-level")
  assert ("class-level labels" in result.stdout) == (preset == "class-level")
  assert not os.path.exists(out + ".partial")


def test_synthetic_presets_have_the_releases_sizes():
  frames = {name: p["recordings"] * p["duration_s"] * p["fps"] for name, p in synthetic.PRESETS.items()}
  assert frames == {"pixel-level": 270_000, "class-level": 2_200_000}


def test_class_level_labels_are_whole_frame_masks(tmp_path):
  rec = handmade.recording()
  path = os.path.join(tmp_path, "videos", "hand.mat")
  fmf_format.write_video(path, rec.frames, fmf_format.FrameMasks(rec.labels, handmade.H, handmade.W))
  assert fmf_format.check_video(path) == (handmade.T, handmade.H, handmade.W) and not fmf_format.has_masks(path)
  masks = fmf_format.FrameMasks(rec.labels, handmade.H, handmade.W)
  np.testing.assert_array_equal(masks[[7, 8]], np.stack([np.zeros((6, 8)), np.ones((6, 8))]).astype(np.uint8))
  assert masks[9].shape == (6, 8) and masks[2:5].shape == (3, 6, 8)


def test_cli_synth_leftover_of_a_killed_run_is_removed(tmp_path):
  out = str(tmp_path / "synth")
  os.makedirs(out + ".partial/videos")  # what a killed synth leaves
  result = _cli("synth", "--out", out, "--recordings", "1", "--duration_s", "500", "--fps", "0.5",
                "--lead_min_s", "60", "--lead_max_s", "90")
  assert result.returncode == 0, result.stderr
  assert not os.path.exists(out + ".partial") and len(validate.validate_root(out)) == 1


def test_a_filesystem_without_locks_goes_on_unguarded_and_says_so(tmp_path, monkeypatch, capsys):
  import errno
  import fcntl

  from fmjax.runtime import locks

  def no_locks(f, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)
  with locks.exclusive(str(tmp_path / "x.lock")) as held:
    assert held
  assert "has no file locks" in capsys.readouterr().err


def test_a_lock_found_held_names_its_holder_and_is_taken_once_the_holder_dies(tmp_path, capsys):
  """The holder writes its pid and host; a second process sees them at once (wait=False) and, waiting,
  gets the lock the moment the holder is killed (the kernel releases it: no stale lock is left)."""
  import socket
  import time

  from fmjax.runtime import locks

  lock = str(tmp_path / "x.lock")
  code = (f"import sys, time; sys.path.insert(0, {os.getcwd()!r}); from fmjax.runtime import locks\n"
          f"with locks.exclusive({lock!r}):\n  print('held', flush=True); time.sleep(60)")
  holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with locks.exclusive(lock, wait=False) as held:
      assert not held
    assert locks.holder(lock) == f"pid {holder.pid} on host {socket.gethostname()}"
    holder.kill()
    start = time.time()
    with locks.exclusive(lock, waiting="testing") as held:
      assert held and time.time() - start < 30
    assert locks.holder(lock) == f"pid {os.getpid()} on host {socket.gethostname()}"
  finally:
    holder.kill()
    holder.wait()
