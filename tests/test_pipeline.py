"""Clips and step sequences against hand-computed expectations; sharding, batching, device layout."""

import json
import os
import subprocess
import sys

import handmade
import jax
import numpy as np
import pytest

from fmjax.data import fmf_format, pipeline
from fmjax.runtime import compat, errors, parallel


def rows(*r):
  """Expected current rows of the hand-made recording: row r = 6000 + [r, 100 + r, 200 + r]."""
  r = np.asarray(r)
  return (6000 + np.stack([r, 100 + r, 200 + r], 1)).astype(np.float32)


@pytest.fixture(scope="module")
def rec():
  return handmade.recording()


def test_clip_frames_clip_at_zero_and_current_ends_at_frame_second(rec):
  clip = pipeline.fmformer_clip(rec, 5, num_frames=4, sampling_rate=2, current_seconds=3)
  # frames 5-6=-1, 1, 3, 5 -> clipped to 0, 1, 3, 5; frame 5 is at second 3 + 5//2 = 5
  np.testing.assert_array_equal(clip["video"], rec.frames[[0, 1, 3, 5]])
  # seconds 3, 4, 5 -> rows 6..11
  np.testing.assert_array_equal(clip["current"], rows(6, 7, 8, 9, 10, 11))
  assert clip["label"] == 0 and clip["mask"].shape == (6, 8) and not clip["mask"].any()
  assert clip["video"].dtype == np.uint8 and clip["current"].dtype == np.float32


def test_clip_with_fewer_seconds_than_asked_is_linspace_resampled(rec):
  clip = pipeline.fmformer_clip(rec, 0, num_frames=2, sampling_rate=1, current_seconds=8)
  # frame 0 is at second 3: only seconds 0..3 (rows 0..7) exist; 16 rows = floor(linspace(0, 7, 16))
  np.testing.assert_array_equal(clip["current"], rows(0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7))
  np.testing.assert_array_equal(clip["video"], rec.frames[[0, 0]])


def test_clip_label_mask_and_official_layout(rec):
  clip = pipeline.fmformer_clip(rec, 9, num_frames=3, current_seconds=2)
  assert clip["label"] == 1 and clip["mask"][1, 2] == 1 and clip["mask"].sum() == 1
  official = pipeline.fmformer_clip(rec, 9, num_frames=3, current_seconds=2, official_layout=True)
  assert official["video"].shape == (3, handmade.W, handmade.H, 3)  # h5py's [W, H], as the official loader
  assert official["video"][2, 7, 1, 0] == handmade.pixel_value(9, 1, 7, 0)
  assert official["mask"][2, 1] == 1


def test_step_sequence_hand_computed(rec):
  seq = pipeline.step_sequence(rec, 11, num_steps=2, step_seconds=2, frames_per_step=2, history_steps=1)
  # frame 11 is at second 8: window = seconds 5..8 (steps [5,6], [7,8]), history = seconds 3..4
  np.testing.assert_array_equal(seq["current"].reshape(-1, 3), rows(*range(10, 18)))
  np.testing.assert_array_equal(seq["current_history"].reshape(-1, 3), rows(*range(6, 10)))
  # step [5,6] holds frames 4..7, step [7,8] frames 8..11: two evenly spread frames each
  np.testing.assert_array_equal(seq["video"][:, :, 0, 0, 0], [[4 * 7, 7 * 7], [8 * 7 % 256, 11 * 7 % 256]])
  np.testing.assert_array_equal(seq["labels"], [0, 1])
  assert seq["video"].shape == (2, 2, 6, 8, 3) and seq["end_second"] == 8


def test_step_sequence_paired_by_the_lead_takes_the_earlier_current(rec):
  seq = pipeline.step_sequence(rec, 11, num_steps=2, step_seconds=2, frames_per_step=2, current_shift_s=2)
  # frame 11 is at second 8; the current ends 2 s earlier: seconds 3..6 (rows 6..13); the video is unchanged
  np.testing.assert_array_equal(seq["current"].reshape(-1, 3), rows(*range(6, 14)))
  np.testing.assert_array_equal(seq["video"][:, :, 0, 0, 0], [[4 * 7, 7 * 7], [8 * 7 % 256, 11 * 7 % 256]])
  np.testing.assert_array_equal(seq["labels"], [0, 1])
  assert seq["end_second"] == 8 and seq["current_second"] == 6
  assert pipeline.step_sequence(rec, 11, num_steps=2, step_seconds=2)["current_second"] == 8
  # frame i is at second 3 + i // 2; 4 s of current up to second - 2 exist from second 5 (frame 4) on
  ends = pipeline.valid_sequence_ends(rec, np.arange(12), num_steps=2, step_seconds=2, current_shift_s=2)
  np.testing.assert_array_equal(ends, np.arange(4, 12))


def test_current_windows_at_many_seconds_by_hand(rec):
  np.testing.assert_array_equal(pipeline.current_windows(rec, np.array([3, 8]), 3), [rows(*range(2, 8)),
                                                                                    rows(*range(12, 18))])
  # at second 0 only rows 0, 1 exist: 4 rows = floor(linspace(0, 1, 4)), as one window gives it
  np.testing.assert_array_equal(pipeline.current_windows(rec, np.array([0]), 2)[0], rows(0, 0, 0, 1))
  np.testing.assert_array_equal(pipeline.current_window(rec, 0, 2), rows(0, 0, 0, 1))


def test_step_sequence_stops_at_frame_i_and_downsamples(rec):
  seq = pipeline.step_sequence(rec, 8, num_steps=1, step_seconds=2, frames_per_step=3, downsample_factor=2)
  # frame 8 is at second 7: step = seconds 6..7 holds frames 6..9, but only frames <= 8 may be used
  expected = handmade.recording().frames[[6, 7, 8]].reshape(3, 3, 2, 4, 2, 3).mean(axis=(2, 4))
  np.testing.assert_array_equal(seq["video"][0], np.round(expected).astype(np.uint8))
  assert seq["labels"].tolist() == [1]


def test_step_sequence_names_a_short_history(rec):
  with pytest.raises(ValueError, match="needs 8 s of current up to second 3, has 4 s"):
    pipeline.step_sequence(rec, 0, num_steps=2, step_seconds=2, history_steps=2)
  ends = pipeline.valid_sequence_ends(rec, np.arange(12), num_steps=2, step_seconds=2, history_steps=2)
  np.testing.assert_array_equal(ends, [8, 9, 10, 11])  # frames 8..11 are at seconds 7..8: 8 s of current


def test_two_hosts_read_their_blocks_of_the_one_host_batches(rec):
  """Host p's k-th batch is the p-th half of the k-th global batch one host would make (same seed)."""
  split = np.stack([np.zeros(12, int), np.arange(12)], 1)
  make = lambda host, hosts, batch: pipeline.make_dataset(
      [rec], split, sample_kind="clip", batch_size=batch, seed=3, num_epochs=2, process_index=host,
      process_count=hosts, sample_spec=dict(num_frames=2, current_seconds=2))
  one = [b["frame"].tolist() for b in make(0, 1, 4)]
  two = [[b["frame"].tolist() for b in make(host, 2, 2)] for host in range(2)]
  assert len(one) == len(two[0]) == len(two[1]) == 6
  assert [h0 + h1 for h0, h1 in zip(*two)] == one
  assert sorted(sum(one[:3], [])) == list(range(12))


def test_evaluation_pads_every_host_to_whole_global_batches(rec):
  """9 samples, 2 hosts x 2: three global batches of 4, the last with 1 real sample (host 1's last
  batch is all padding); every sample once among the valid rows, in order."""
  split = np.stack([np.zeros(9, int), np.arange(9)], 1)
  hosts = [list(pipeline.make_dataset([rec], split, sample_kind="clip", batch_size=2, shuffle=False, num_epochs=1,
                                      drop_remainder=False, pad=True, process_index=host, process_count=2,
                                      sample_spec=dict(num_frames=2, current_seconds=2))) for host in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 3
  frames = [f for b0, b1 in zip(*hosts) for b in (b0, b1) for f, v in zip(b["frame"], b["valid"]) if v]
  assert frames == list(range(9))
  assert [b["valid"].tolist() for b in hosts[1]] == [[True, True], [True, True], [False, False]]


def test_training_split_smaller_than_a_global_batch_is_an_error(rec):
  split = np.stack([np.zeros(3, int), np.arange(3)], 1)
  with pytest.raises(errors.ConfigError, match="3 samples, fewer than one global batch of 4"):
    pipeline.make_dataset([rec], split, sample_kind="clip", batch_size=2, process_index=0, process_count=2,
                          sample_spec=dict(num_frames=2, current_seconds=2))


def test_batches_are_seeded_and_reshuffled_each_epoch(rec):
  split = np.stack([np.zeros(12, int), np.arange(12)], 1)
  make = lambda seed: pipeline.make_dataset([rec], split, sample_kind="clip", batch_size=4, seed=seed, num_epochs=2,
                                            process_index=0, process_count=1,
                                            sample_spec=dict(num_frames=3, current_seconds=5))
  order = lambda ds: [b["frame"].tolist() for b in ds]
  first, again, other = order(make(0)), order(make(0)), order(make(1))
  assert first == again and first != other and len(first) == 6
  epoch1, epoch2 = sum(first[:3], []), sum(first[3:], [])
  assert sorted(epoch1) == sorted(epoch2) == list(range(12)) and epoch1 != epoch2
  batch = next(iter(make(0)))
  assert batch["video"].shape == (4, 3, 6, 8, 3) and batch["current"].shape == (4, 10, 3)
  assert batch["label"].shape == (4,) and batch["mask"].shape == (4, 6, 8)


def test_sequences_skip_ends_without_enough_history(rec):
  split = np.stack([np.zeros(12, int), np.arange(12)], 1)
  ds = pipeline.make_dataset([rec], split, sample_kind="sequence", batch_size=1, shuffle=False, num_epochs=1,
                             process_index=0, process_count=1,
                             sample_spec=dict(num_steps=2, step_seconds=2, history_steps=2))
  assert [int(b["frame"][0]) for b in ds] == [8, 9, 10, 11]


WORKERS_OUTSIDE_AN_ABSL_APP = """
import json
from absl import flags

def given():
  return {name: flags.FLAGS[name].present for name in flags.FLAGS}

before = given()
import handmade
from fmjax.data import pipeline

split = [[0, k] for k in range(12)]
make = lambda workers: pipeline.make_dataset(
    [handmade.recording()], split, sample_kind="clip", batch_size=2, seed=1, num_epochs=1, process_index=0,
    process_count=1, worker_count=workers, sample_spec=dict(num_frames=2, current_seconds=2))
parsed = flags.FLAGS.is_parsed()
batches = [b["frame"].tolist() for b in make(2)]
changed = sorted(name for name, present in given().items() if present != before.get(name, 0))
print(json.dumps(dict(parsed=[parsed, flags.FLAGS.is_parsed()], changed=changed, workers=batches,
                      in_process=[b["frame"].tolist() for b in make(0)])))
"""


@pytest.mark.stack  # grain reads its flag beside jaxlib 0.10.2, not beside Colab's 0.7.2
def test_worker_processes_run_without_parsing_absl_flags():
  # A fresh process outside an absl app: grain's workers read the batches, and FLAGS stays unparsed; only
  # the one grain flag read while starting workers is marked given, where grain reads it (fmjax.runtime.compat).
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
  out = subprocess.run([sys.executable, "-c", WORKERS_OUTSIDE_AN_ABSL_APP], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["parsed"] == [False, False]
  read = compat.grain_reads_flags_in_parent()
  assert result["changed"] == (["grain_enable_multiprocess_worker_profiling"] if read else [])
  assert result["workers"] == result["in_process"] and len(result["workers"]) == 6
  assert sorted(sum(result["workers"], [])) == list(range(12))


def test_device_batches_lay_the_global_batch_over_the_mesh(rec):
  assert jax.device_count() == 4, "conftest forces 4 host devices"
  mesh = jax.make_mesh((4,), ("data",))
  sharding = jax.NamedSharding(mesh, jax.P("data"))
  split = np.stack([np.zeros(12, int), np.arange(12)], 1)
  ds = pipeline.make_dataset([rec], split, sample_kind="clip", batch_size=8, seed=0, num_epochs=1, process_index=0,
                             process_count=1, sample_spec=dict(num_frames=2, current_seconds=2))
  host = next(iter(ds))
  (batch,) = list(parallel.device_batches([host], sharding))
  assert batch["video"].shape == (8, 2, 6, 8, 3) and len(batch["video"].addressable_shards) == 4
  assert batch["video"].sharding.is_equivalent_to(sharding, 5)
  np.testing.assert_array_equal(np.asarray(batch["current"]), host["current"])


def test_background_errors_reach_the_consumer():
  def broken():
    yield {"x": np.zeros(2)}
    raise fmf_format.FmfFormatError("f.csv: bad")
  it = parallel.device_batches(broken())
  next(it)
  with pytest.raises(fmf_format.FmfFormatError, match="f.csv: bad"):
    next(it)
