"""Input pipeline: random-access windows -> seeded, per-host sharded batches -> device arrays.

Two sample shapes, both pure functions of a recording (an in-memory `fmf_format.Recording` or one
backed by array_record from `tfds_fmf.load`) and the index of the frame the sample ends at:

* `fmformer_clip`: the official FmFormer loader's clip -- `num_frames` frames at `sampling_rate`
  ending at frame i (clipped at 0), the last `current_seconds` seconds of current up to frame i's
  second (2 rows per second, linspace-resampled when fewer exist), frame i's label and mask.
* `step_sequence`: L steps of `step_seconds` each for Uni-Code and alignment -- per-step frames
  (optionally block-averaged to low resolution), per-step current rows and labels, plus an optional
  current history of H steps before the window.

`make_dataset` turns a split into a grain `IterDataset` of per-host batches (seeded shuffling,
epochs or endless, each host its block of every global batch, padding for evaluation, background
prefetch); `fmjax.runtime.parallel` lays each batch out across the data-parallel mesh.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import grain
import numpy as np

from fmjax.data import fmf_format
from fmjax.runtime import compat, errors

compat.apply()  # again, now that grain's flags exist: its workers then start outside an absl app too

Batch = dict[str, np.ndarray]
SampleIndex = np.ndarray  # (n, 2) int: (recording position, frame index the sample ends at)


# ----------------------------------------------------------------------------- current windows


def _current_position(rec: fmf_format.Recording, second: int) -> int:
  """Index of the last current second at or before `second` (the official loader's exact match)."""
  return int(np.searchsorted(rec.current_second_values, second, side="right")) - 1


def current_window(rec: fmf_format.Recording, second: int, num_seconds: int) -> np.ndarray:
  """The last `num_seconds` seconds of current rows up to and including `second`: (2*num_seconds, 3).

  Where fewer seconds exist (the recording's start), the rows present are index-resampled with
  linspace to the full length, as the official loader does.
  """
  return current_windows(rec, np.asarray([second]), num_seconds)[0]


def current_windows(rec: fmf_format.Recording, seconds: np.ndarray, num_seconds: int) -> np.ndarray:
  """`current_window` at each of `seconds` at once: (len(seconds), 2*num_seconds, 3) float32."""
  length = fmf_format.ROWS_PER_SECOND * num_seconds
  pos = np.searchsorted(rec.current_second_values, np.asarray(seconds), side="right") - 1
  stop = fmf_format.ROWS_PER_SECOND * (pos + 1)                   # one past each window's last row
  have = np.minimum(stop, length)                                 # rows present (fewer at the start)
  # floor(linspace(0, have - 1, length)) within the rows present, computed as np.linspace does
  step = (have - 1) / (length - 1) if length > 1 else np.zeros(len(pos))
  offsets = np.arange(length)[None, :] * step[:, None]
  offsets[:, -1] = have - 1                                       # np.linspace ends exactly at its stop
  offsets = offsets.astype(np.int32)
  offsets = np.where((have == length)[:, None], np.arange(length)[None, :], offsets)
  return np.asarray(rec.current[(stop - have)[:, None] + offsets], np.float32)


# ----------------------------------------------------------------------------- FmFormer clips


def clip_indices(i: int, num_frames: int, sampling_rate: int) -> np.ndarray:
  """Frame indices i-(num_frames-1)*rate ... i step rate, clipped at 0."""
  return np.maximum(np.arange(i - (num_frames - 1) * sampling_rate, i + 1, sampling_rate), 0)


def fmformer_clip(rec: fmf_format.Recording, i: int, num_frames: int = 10, sampling_rate: int = 1,
                  current_seconds: int = 120, official_layout: bool = False) -> dict[str, Any]:
  """One FmFormer sample ending at frame i, with the official loader's semantics.

  Returns video (num_frames, H, W, 3) uint8, current (2*current_seconds, 3) float32 amperes, label int
  and mask (H, W) uint8. `official_layout=True` swaps H and W in video and mask: the official loader
  feeds h5py's [W, H] order untransposed, so converted official weights expect that layout.
  """
  video = rec.frames[clip_indices(i, num_frames, sampling_rate)]
  mask = rec.masks[i]
  if official_layout:
    video, mask = video.swapaxes(1, 2), mask.swapaxes(0, 1)
  return {"video": video, "current": current_window(rec, int(rec.frame_seconds[i]), current_seconds),
          "label": int(rec.labels[i]), "mask": mask}


# ----------------------------------------------------------------------------- step sequences


def downsample(frames: np.ndarray, factor: int) -> np.ndarray:
  """Block-average (..., H, W, C) uint8 frames by `factor` in H and W (rounded back to uint8)."""
  if factor == 1:
    return frames
  *lead, h, w, c = frames.shape
  if h % factor or w % factor:
    raise errors.ConfigError(f"downsample factor {factor} does not divide the image size {h}x{w}")
  blocks = frames.reshape(*lead, h // factor, factor, w // factor, factor, c).mean(axis=(-4, -2))
  return np.round(blocks).astype(np.uint8)


def downsampled_frames(rec: fmf_format.Recording, index: np.ndarray, factor: int) -> np.ndarray:
  """`downsample(rec.frames[index], factor)`, sliced from the prepared root's reduced copy of its frames
  where it has one (`fmjax.data.downsampled`), else computed."""
  cached = getattr(rec.frames, "downsampled", {}).get(factor)
  if cached is not None:
    return np.asarray(cached[index])
  return downsample(rec.frames[index], factor)


def step_sequence(rec: fmf_format.Recording, i: int, num_steps: int = 10, step_seconds: int = 2,
                  frames_per_step: int = 1, history_steps: int = 0, downsample_factor: int = 1,
                  current_shift_s: int = 0) -> dict[str, Any]:
  """L=`num_steps` steps of `step_seconds` ending at frame i's second, for Uni-Code and alignment.

  Step j covers `step_seconds` current seconds; its frames are `frames_per_step` frames spread evenly
  over the frames of those seconds that are not later than i (the last step ends with frame i), its
  label is the label of its last frame. Returns video (L, F, H/d, W/d, 3) uint8, current
  (L, 2*step_seconds, 3) float32, labels (L,) int32, end_second, current_second (the current's last
  second), and with `history_steps` H > 0 also current_history (H, 2*step_seconds, 3): the current just
  before the window. With `current_shift_s` S > 0 the current is the sequence that ends S seconds
  earlier than the video (pairing by the current's lead); the frames of each step are those of the
  step's seconds plus S. Raises ValueError if the current before frame i's second minus S is shorter
  than (H + L) steps (see `valid_sequence_ends`).
  """
  rows = fmf_format.ROWS_PER_SECOND
  second = int(rec.frame_seconds[i])
  pos = _current_position(rec, second - current_shift_s)
  total = (history_steps + num_steps) * step_seconds
  if pos + 1 < total:
    raise errors.ConfigError(f"{rec.name} frame {i}: needs {total} s of current up to second "
                             f"{second - current_shift_s}, has {pos + 1} s")
  current = rec.current[rows * (pos + 1 - total):rows * (pos + 1)].reshape(
      history_steps + num_steps, rows * step_seconds, 3)
  seconds = rec.current_seconds[rows * (pos + 1 - num_steps * step_seconds):rows * (pos + 1):rows] + current_shift_s
  first_second = seconds.reshape(num_steps, step_seconds)[:, 0]
  last_second = seconds.reshape(num_steps, step_seconds)[:, -1]
  last = np.minimum(np.searchsorted(rec.frame_seconds, last_second, side="right") - 1, i)
  first = np.minimum(np.searchsorted(rec.frame_seconds, first_second, side="left"), last)
  last, first = np.maximum(last, 0), np.maximum(first, 0)  # a step before the first frame repeats frame 0
  pick = np.round(np.linspace(first, last, frames_per_step, axis=1)).astype(np.int64)  # (L, F)
  out = {
      "video": downsampled_frames(rec, pick, downsample_factor),
      "current": np.asarray(current[history_steps:], np.float32),
      "labels": rec.labels[last].astype(np.int32),
      "end_second": second,
      "current_second": int(rec.current_second_values[pos]),
  }
  if history_steps:
    out["current_history"] = np.asarray(current[:history_steps], np.float32)
  return out


def valid_sequence_ends(rec: fmf_format.Recording, frames: np.ndarray, num_steps: int, step_seconds: int,
                        history_steps: int = 0, current_shift_s: int = 0) -> np.ndarray:
  """The subset of frame indices with enough current before them for `step_sequence`."""
  have = np.searchsorted(rec.current_second_values, rec.frame_seconds[frames] - current_shift_s, side="right")
  return frames[have >= (history_steps + num_steps) * step_seconds]


# ----------------------------------------------------------------------------- grain sources


class WindowSource(grain.sources.RandomAccessDataSource):
  """Random access to samples (a `SampleIndex`) through a sample function."""

  def __init__(self, recordings: Sequence[fmf_format.Recording], samples: SampleIndex,
               sample_fn: Callable[..., dict[str, Any]], extra: dict[str, np.ndarray] | None = None):
    self._recordings, self._samples, self._sample_fn = list(recordings), np.asarray(samples), sample_fn
    self._extra = extra or {}

  def __len__(self) -> int:
    return len(self._samples)

  def __getitem__(self, k: int) -> dict[str, Any]:
    rec, i = (int(v) for v in self._samples[k])
    sample = self._sample_fn(self._recordings[rec], i)
    sample.update(recording=rec, frame=i, **{key: v[k] for key, v in self._extra.items()})
    return sample

  def __repr__(self) -> str:
    return f"WindowSource({len(self)} samples, {getattr(self._sample_fn, 'func', self._sample_fn).__name__})"


SAMPLE_KINDS = {"clip": fmformer_clip, "sequence": step_sequence}


def sample_fn(sample_kind: str, **sample_spec) -> Callable[..., dict[str, Any]]:
  """The sample function of a job: 'clip' (FmFormer) or 'sequence' (Uni-Code / alignment), with
  `sample_spec` its geometry keyword arguments (e.g. num_frames, current_seconds; num_steps, ...)."""
  if sample_kind not in SAMPLE_KINDS:
    raise errors.ConfigError(f"unknown sample kind {sample_kind!r}; expected one of {sorted(SAMPLE_KINDS)}")
  return functools.partial(SAMPLE_KINDS[sample_kind], **sample_spec)


def split_samples(recordings: Sequence[fmf_format.Recording], samples: SampleIndex, sample_kind: str,
                  **sample_spec) -> SampleIndex:
  """The `samples` that can be made; sequences keep only ends with enough current history."""
  if sample_kind != "sequence" or len(samples) == 0:
    return samples
  out = []
  for r, rec in enumerate(recordings):
    ends = valid_sequence_ends(rec, samples[samples[:, 0] == r, 1], sample_spec.get("num_steps", 10),
                               sample_spec.get("step_seconds", 2), sample_spec.get("history_steps", 0),
                               sample_spec.get("current_shift_s", 0))
    out.append(np.stack([np.full(len(ends), r), ends], 1))
  return np.concatenate(out)


def pad_to_whole_batches(samples: SampleIndex, global_batch: int) -> tuple[SampleIndex, np.ndarray]:
  """(`samples` padded with copies of the first to a multiple of `global_batch`, which entries are real).

  Evaluation reads every sample once: with whole global batches every host runs the same number of
  steps (no host waits forever in a collective), and the `valid` mask drops the copies."""
  pad = -len(samples) % global_batch
  if len(samples) == 0:
    return samples, np.zeros(0, bool)
  return (np.concatenate([samples, np.repeat(samples[:1], pad, 0)]),
          np.arange(len(samples) + pad) < len(samples))


def make_dataset(recordings: Sequence[fmf_format.Recording], samples: SampleIndex, *, sample_kind: str,
                 batch_size: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 drop_remainder: bool = True, pad: bool = False, process_index: int | None = None,
                 process_count: int | None = None, worker_count: int = 0, read_threads: int = 4,
                 prefetch: int = 64, sample_spec: dict[str, Any] | None = None,
                 start_batch: int = 0) -> grain.IterDataset:
  """A grain dataset of this host's batches of `batch_size` (the per-host share of the global batch).

  `samples` are (recording, frame) pairs, e.g. a split's (`PreparedFmf.split`); `sample_kind` and
  `sample_spec` say what sample ends at each (`sample_fn`). The order is global: every host shuffles
  the whole split with the same seed (each epoch differently; `num_epochs=None` repeats forever) and
  cuts it into global batches of `batch_size * process_count`; host p reads the p-th block of
  `batch_size` rows of each (so N hosts together see exactly the batches one host would, row for
  row). `pad=True` (evaluation) pads the samples to whole global batches and adds a boolean `valid`
  field. `worker_count` > 0 reads in that many worker processes. `start_batch` skips that many batches
  without reading them: the order is a pure function of the seed and the batch index, so a resumed
  run sees exactly the batches an uninterrupted one would.
  """
  import jax

  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  sample_spec = dict(sample_spec or {})
  samples = split_samples(recordings, np.asarray(samples).reshape(-1, 2), sample_kind, **sample_spec)
  extra = None
  if pad:
    samples, valid = pad_to_whole_batches(samples, batch_size * process_count)
    extra = {"valid": valid}
  if len(samples) < batch_size * process_count and drop_remainder:
    raise errors.ConfigError(f"the split has {len(samples)} samples, fewer than one global batch of "
                             f"{batch_size * process_count}")
  ds = grain.MapDataset.source(WindowSource(recordings, samples, sample_fn(sample_kind, **sample_spec), extra))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs).batch(batch_size, drop_remainder=drop_remainder, batch_fn=stack_samples)
  if num_epochs is not None and drop_remainder:
    ds = ds[:len(ds) - len(ds) % process_count]  # whole global batches only: every host steps equally often
  ds = ds[process_index::process_count]  # lazy: a host reads its own blocks only
  if start_batch:
    ds = ds[start_batch:]
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return ds


def stack_samples(samples: Sequence[dict[str, Any]]) -> Batch:
  return {k: np.stack([np.asarray(s[k]) for s in samples]) for k in samples[0]}
