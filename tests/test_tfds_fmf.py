"""Preparing an FMF root into array_record: exact frames, index, caching, no TensorFlow."""

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import handmade
import numpy as np
import pytest

from fmjax.data import fingerprint, fmf_format, ground_truth, pipeline, tfds_fmf
from fmjax.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    assert prepared.events(k) == ground_truth.load_events(tiny_root, name)


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
  before = fingerprint.of(root)
  fmf_format.write_splits(root, {"test": {"hand": [9, 10, 11]}})
  assert fingerprint.of(root) != before


def test_bad_root_fails_before_writing(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"))
  os.remove(fmf_format.current_path(root, "hand"))
  data_dir = str(tmp_path / "data")
  with pytest.raises(fmf_format.FmfFormatError, match="currents/hand.csv: missing file"):
    tfds_fmf.load(root, data_dir)
  assert not os.path.exists(os.path.join(data_dir, "fmf_frames"))


def _open_records_equal_the_source(root, prepared):
  for k, name in enumerate(fmf_format.list_recordings(root)):
    want, got = fmf_format.load_recording(root, name), prepared.recordings[k]
    np.testing.assert_array_equal(got.frames[np.arange(want.num_frames)], want.frames)
    np.testing.assert_array_equal(got.masks[np.arange(want.num_frames)], want.masks)


def test_preparation_never_takes_the_shuffler_path(tmp_path, monkeypatch):
  """TFDS's generator builders pass every example through a shuffler that spills to disk through
  TensorFlow past 1 GB; with that limit forced to one byte, preparing still works without TensorFlow."""
  from tensorflow_datasets.core import shuffle
  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1)
  monkeypatch.setattr(tfds_fmf, "SHARD_BYTES", 1000, raising=False)  # several shards per recording
  root = handmade.write_root(str(tmp_path / "root"), names=("hand_a", "hand_b"))
  prepared = tfds_fmf.load(root, str(tmp_path / "data"))
  _open_records_equal_the_source(root, prepared)
  assert len([f for f in os.listdir(prepared.data_dir) if ".array_record-" in f]) == 2 * 3  # 5 of 12 frames a shard
  assert "tensorflow" not in sys.modules


_KILL_DURING_SECOND_SHARD = """
import os, signal, sys
from fmjax.data import tfds_fmf
tfds_fmf.SHARD_BYTES = 1000
call, seen = tfds_fmf._Shard.__call__, []
def dying(self):
  seen.append(self)
  for n, example in enumerate(call(self)):
    if len(seen) == 2 and n == 2:
      os.kill(os.getpid(), signal.SIGKILL)  # mid-shard, records half written
    yield example
tfds_fmf._Shard.__call__ = dying
tfds_fmf.load(sys.argv[1], sys.argv[2])
"""


def test_a_killed_preparation_leaves_nothing_a_rerun_trips_over(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"), names=("hand_a", "hand_b"))
  data_dir = str(tmp_path / "data")
  killed = subprocess.run([sys.executable, "-c", _KILL_DURING_SECOND_SHARD, root, data_dir], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert killed.returncode == -9, killed.stderr
  config_dir = os.path.dirname(tfds_fmf.builder(root, data_dir).data_dir)
  assert [f for f in os.listdir(config_dir) if f.startswith("incomplete.")]  # what the kill left
  prepared = tfds_fmf.load(root, data_dir)
  _open_records_equal_the_source(root, prepared)
  assert sorted(os.listdir(config_dir)) == [".prepare.lock", "1.0.0"]


def test_no_space_left_is_a_data_error_naming_the_root_and_keeps_nothing(tmp_path, monkeypatch):
  root = handmade.write_root(str(tmp_path / "root"))
  data_dir = str(tmp_path / "data")

  def full(self):
    yield "hand/0", {"image": self.recording.frames[0], "mask": self.recording.masks[0]}
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(tfds_fmf._Shard, "__call__", full)
  with pytest.raises(errors.DataError, match=f"{root}: preparing or opening {root} failed: No space left on device"):
    tfds_fmf.load(root, data_dir)
  config_dir = os.path.dirname(tfds_fmf.builder(root, data_dir).data_dir)
  assert os.listdir(config_dir) == [".prepare.lock"]  # TFDS removed its incomplete folder


def test_too_little_disk_is_said_before_writing(tmp_path, monkeypatch):
  root = handmade.write_root(str(tmp_path / "root"))
  monkeypatch.setattr(tfds_fmf.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 100))
  with pytest.raises(errors.DataError, match=r"GB are needed to prepare .*, 0.0 GB are free"):
    tfds_fmf.load(root, str(tmp_path / "data"))


_PREPARE_SLOWLY = """
import sys, time
from fmjax.data import tfds_fmf
tfds_fmf.SHARD_BYTES = 1000
call = tfds_fmf._Shard.__call__
def slow(self):
  time.sleep(0.5)
  yield from call(self)
tfds_fmf._Shard.__call__ = slow
tfds_fmf.load(sys.argv[1], sys.argv[2])
"""


def test_a_preparation_that_waited_for_another_opens_what_that_one_wrote(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"), names=("hand_a", "hand_b"))
  data_dir = str(tmp_path / "data")
  config_dir = os.path.dirname(tfds_fmf.builder(root, data_dir).data_dir)
  first = subprocess.Popen([sys.executable, "-c", _PREPARE_SLOWLY, root, data_dir],
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  deadline = time.time() + 60
  while not (os.path.isdir(config_dir) and [f for f in os.listdir(config_dir) if f.startswith("incomplete.")]):
    assert time.time() < deadline and first.poll() is None, "the first preparation never started writing"
    time.sleep(0.05)
  prepared = tfds_fmf.load(root, data_dir)  # waits for the lock, then finds the records written
  assert first.wait(60) == 0
  _open_records_equal_the_source(root, prepared)


def test_a_failed_record_write_is_a_data_error(tmp_path, monkeypatch):
  """array_record reports a write that fails (a full disk, a quota) as a RuntimeError."""
  from tensorflow_datasets.core import file_adapters

  def full(cls, path, iterator):
    raise RuntimeError("ArrayRecordWriter: No space left on device")

  monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, "write_examples", classmethod(full))
  root = handmade.write_root(str(tmp_path / "root"))
  with pytest.raises(errors.DataError, match="writing the records of .* failed .*No space left on device"):
    tfds_fmf.load(root, str(tmp_path / "data"))


def test_class_level_records_hold_no_masks_and_read_back_the_labels(tmp_path):
  rec = handmade.recording()
  rec.masks = fmf_format.FrameMasks(rec.labels, handmade.H, handmade.W)
  root = str(tmp_path / "root")
  fmf_format.write_recording(root, rec)
  fmf_format.write_splits(root, {"train": {"hand": range(0, 8)}, "test": {"hand": range(8, 12)}})
  prepared = tfds_fmf.load(root, str(tmp_path / "data"))
  got = prepared.recordings[0]
  assert not prepared.has_masks and isinstance(got.masks, fmf_format.FrameMasks)
  np.testing.assert_array_equal(got.frames[np.arange(12)], rec.frames)
  np.testing.assert_array_equal(got.labels, rec.labels)
  np.testing.assert_array_equal(got.masks[[7, 8]][:, 0, 0], [0, 1])
  assert tfds_fmf.storage_bytes(prepared) < 12 * handmade.H * handmade.W * 3 * 1.1 + 2e6  # no mask bytes


def _prepared_dir(tmp_path, names=("hand",)):
  root = handmade.write_root(str(tmp_path / "root"), names=names)
  data_dir = str(tmp_path / "data")
  return root, data_dir, tfds_fmf.load(root, data_dir).data_dir


def _manifest(directory):
  with open(os.path.join(directory, "fmf_manifest.json")) as f:
    return json.load(f)


def _preparing_again(capsys) -> list[str]:
  return [line for line in capsys.readouterr().err.splitlines() if "preparing again" in line]


def test_the_manifest_lists_every_file_with_its_size(tmp_path):
  _, _, directory = _prepared_dir(tmp_path, names=("hand_a", "hand_b"))
  manifest = _manifest(directory)
  on_disk = {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)}
  assert manifest["files"] == {name: size for name, size in on_disk.items() if name != "fmf_manifest.json"}
  assert manifest["records"] == 24 and sum(manifest["shards"].values()) == 24
  assert set(manifest["shards"]) == {name for name in on_disk if ".array_record-" in name}


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {  # file -> (damage, what the one line says)
    "fmf_index.npz": (os.remove, "fmf_index.npz is missing; preparing again"),
    "fmf_frames-frames.array_record-00000-of-00001": (_truncate, "holds 65536 bytes, 131072 when it was prepared"),
    "features.json": (os.remove, "features.json is missing; preparing again"),
    "fmf_manifest.json": (lambda path: open(path, "w").write("{"), "fmf_manifest.json cannot be read (JSONDecodeError"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_prepared_dataset_is_prepared_again_after_one_line_saying_why(tmp_path, capsys, name):
  root, data_dir, directory = _prepared_dir(tmp_path)
  damage, said = DAMAGE[name]
  damage(os.path.join(directory, name))
  capsys.readouterr()
  prepared = tfds_fmf.load(root, data_dir)
  (line,) = _preparing_again(capsys)
  assert line.startswith(os.path.join(directory, name)) and said in line
  _open_records_equal_the_source(root, prepared)
  assert _manifest(directory)["records"] == 12


def test_a_preparation_from_before_manifests_is_checked_and_kept(tmp_path, capsys):
  root, data_dir, directory = _prepared_dir(tmp_path)
  written = _manifest(directory)
  shard = os.path.join(directory, "fmf_frames-frames.array_record-00000-of-00001")
  stamp = os.stat(shard).st_mtime_ns
  os.remove(os.path.join(directory, "fmf_manifest.json"))  # as every preparation before manifests left it
  capsys.readouterr()
  _open_records_equal_the_source(root, tfds_fmf.load(root, data_dir))
  err = capsys.readouterr().err
  assert f"{directory}: prepared before fmjax kept manifests" in err and "(manifest written)" in err
  assert not _preparing_again(capsys) and os.stat(shard).st_mtime_ns == stamp  # kept, not written again
  assert _manifest(directory) == written


def test_a_preparation_from_before_manifests_missing_a_shard_is_prepared_again(tmp_path, capsys):
  root, data_dir, directory = _prepared_dir(tmp_path)
  shard = os.path.join(directory, "fmf_frames-frames.array_record-00000-of-00001")
  os.remove(os.path.join(directory, "fmf_manifest.json"))
  os.remove(shard)
  capsys.readouterr()
  _open_records_equal_the_source(root, tfds_fmf.load(root, data_dir))
  assert _preparing_again(capsys) == [f"{shard} is missing; preparing again"]


def test_content_fingerprint_sees_a_change_that_keeps_sizes_and_times(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"))
  path = fmf_format.current_path(root, "hand")
  before = {kind: fingerprint.of(root, kind) for kind in fingerprint.KINDS}
  assert before["stat"] != before["content"]  # one root, two names: the two never share a preparation
  stat = os.stat(path)
  with open(path, "r+b") as f:  # one digit changed in place, times put back: what `cp -p` of an edit leaves
    f.seek(40)
    digit = f.read(1)
    f.seek(40)
    f.write(b"7" if digit != b"7" else b"8")
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert fingerprint.of(root, "stat") == before["stat"]
  assert fingerprint.of(root, "content") != before["content"]


def test_an_unknown_fingerprint_is_one_config_error(tmp_path):
  from configs import common

  data = common.data_config()
  assert data.fingerprint == "stat"
  data.root, data.data_dir, data.fingerprint = handmade.write_root(str(tmp_path / "root")), str(tmp_path / "d"), "md5"
  with pytest.raises(errors.ConfigError, match="^fingerprint 'md5' is unknown .*'stat' .* 'content'"):
    tfds_fmf.load_from_config(data)
  data.fingerprint = "content"
  prepared = tfds_fmf.load_from_config(data)
  assert os.path.basename(os.path.dirname(prepared.data_dir)) == fingerprint.of(data.root, "content")


def _cli_prepare(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "data.py"), "prepare", *args],
                        capture_output=True, text=True, timeout=300)


def test_cli_prepare_verify_reads_every_record_and_names_the_first_bad_one(tmp_path):
  root = handmade.write_root(str(tmp_path / "root"))
  data_dir = str(tmp_path / "data")
  good = _cli_prepare(root, "--data_dir", data_dir, "--fingerprint=content", "--verify")
  assert good.returncode == 0, good.stderr
  result = json.loads(good.stdout.splitlines()[-1])  # TFDS says on stdout that it prepares
  assert result["verified"] == 12 and result["frames"] == 12
  assert os.path.basename(os.path.dirname(result["data_dir"])) == fingerprint.of(root, "content")
  shard = os.path.join(result["data_dir"], "fmf_frames-frames.array_record-00000-of-00001")
  with open(shard, "r+b") as f:  # the first records' bytes scrambled, the size kept: only reading tells
    f.seek(100)
    f.write(b"\xff" * 1900)
  bad = _cli_prepare(root, "--data_dir", data_dir, "--fingerprint=content", "--verify")
  assert bad.returncode == 1 and bad.stdout == ""
  (line,) = [text for text in bad.stderr.splitlines() if text.startswith("error:")]
  assert line.startswith(f"error: {shard}: record 0 (hand frame 0) cannot be read (RuntimeError: ")
  assert line.endswith(f"remove {result['data_dir']} and prepare it again (python launch/data.py prepare {root})")
