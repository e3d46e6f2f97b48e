"""TFDS builder: any FMF-layout folder -> array_record, prepared once, read back without TensorFlow.

Storage is one record per video frame ({image (H, W, 3), mask (H, W)} as raw uint8 bytes; class-level
data, whose labels are per frame, stores no mask), written in recording order, so a clip is a handful
of random reads and nothing is duplicated per clip. The small per-frame and per-row arrays (labels,
seconds, currents, splits, events, synthetic truth) are kept in an index saved as TFDS metadata
(`fmf_index.npz`) and held in memory.

Preparation streams: the builder is a `tfds.core.ShardBasedBuilder`, which writes each shard of
`SHARD_BYTES` straight to array_record in frame order (TFDS's generator builders pass every example
through a shuffler that spills to disk through TensorFlow past 1 GB, even with shuffling off), and
videos are read from HDF5 a chunk at a time, so memory stays bounded for any size. TFDS writes into an
`incomplete.*` folder renamed into place at the end; preparation holds a lock file beside it, so a
preparation killed at any moment leaves a folder the next one (holding the lock) removes before it
starts again, and two preparations of one root never write at once.

    prepared = tfds_fmf.load(root)                 # prepares on first use, then reuses the cache
    rec = prepared.recordings[0]                   # same fields as fmf_format.Recording
    rec.frames[[5, 6, 7]]                          # (3, H, W, 3) uint8, read from array_record
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from fmjax.data import fmf_format, staging, validate
from fmjax.runtime import console, distributed, errors, locks, paths

VERSION = "1.0.0"
FRAMES_SPLIT = "frames"
_INDEX_FILE = "fmf_index.npz"
SHARD_BYTES = 64 << 20  # frame bytes per array_record shard: TFDS holds one shard's examples while writing it
_LOCK_FILE = ".prepare.lock"
_RECORD_OVERHEAD = 64  # bytes per record besides its pixels (proto keys, array_record framing)


def _pixel_bytes(height: int, width: int, masks: bool) -> int:
  """Raw bytes of one frame's record: its image, and its mask where the data has masks."""
  return height * width * (4 if masks else 3)


def default_data_dir() -> str:
  """Where prepared datasets are cached: $FMJAX_DATA_DIR (relative to the current directory, `~` expanded),
  else ~/.cache/fmjax/tfds."""
  return paths.resolve(os.environ.get("FMJAX_DATA_DIR") or os.path.join("~", ".cache", "fmjax", "tfds"))


def fingerprint(root: str) -> str:
  """Config name of a root: its folder name plus a hash of its path and its files' sizes and times."""
  root = os.path.abspath(root)
  digest = hashlib.sha1(root.encode())
  for sub in ("videos", "currents", "timestamps", "events", "truth", ""):
    folder = os.path.join(root, sub)
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      path = os.path.join(folder, name)
      if os.path.isfile(path):
        st = os.stat(path)
        digest.update(f"{sub}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
  base = "".join(c if c.isalnum() else "_" for c in os.path.basename(root.rstrip(os.sep)).lower()) or "root"
  return f"{base}_{digest.hexdigest()[:10]}"


class FmfIndex(tfds.core.Metadata, dict):
  """The dataset's in-memory index, saved beside the records as one .npz file."""

  def save_metadata(self, data_dir):
    with open(os.path.join(data_dir, _INDEX_FILE), "wb") as f:
      np.savez(f, **self)

  def load_metadata(self, data_dir):
    with open(os.path.join(data_dir, _INDEX_FILE), "rb") as f:
      self.update({k: v for k, v in np.load(f, allow_pickle=False).items()})


@dataclasses.dataclass(eq=False)
class FmfConfig(tfds.core.BuilderConfig):
  """One config per FMF root; named by `fingerprint`, so changed files give a new config."""
  root: str = ""
  height: int = 64
  width: int = 64
  masks: bool = True  # False for class-level data: its masks are its frame labels, never stored


class FmfFrames(tfds.core.ShardBasedBuilder, skip_registration=True):
  """One record per frame of an FMF root (config: `FmfConfig`), written shard by shard in frame order."""

  VERSION = tfds.core.Version(VERSION)

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.height, self.builder_config.width
    raw = tfds.features.Encoding.BYTES  # raw bytes: ~5x faster to read than int64 lists
    features = {"image": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8, encoding=raw)}
    if self.builder_config.masks:
      features["mask"] = tfds.features.Tensor(shape=(h, w), dtype=np.uint8, encoding=raw)
    return tfds.core.DatasetInfo(
        builder=self,
        description="FMF-Benchmark frames (one record per frame, recording-major order).",
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,  # record k must stay frame k: clips index records directly
        metadata=FmfIndex(),
    )

  def _shard_iterators_per_split(self, dl_manager):
    root = self.builder_config.root
    recordings = [fmf_format.load_recording(root, n, lazy=True) for n in fmf_format.list_recordings(root)]
    self.info.metadata.update(build_index(root, recordings))
    h, w = self.builder_config.height, self.builder_config.width
    per_shard = max(1, SHARD_BYTES // _pixel_bytes(h, w, self.builder_config.masks))
    bar = console.bar(total=sum(rec.num_frames for rec in recordings), phase="preparing", unit="frame")
    shards = [_Shard(rec, start, min(start + per_shard, rec.num_frames), self.builder_config.masks, bar)
              for rec in recordings for start in range(0, rec.num_frames, per_shard)]
    return {FRAMES_SPLIT: shards}


@dataclasses.dataclass
class _Shard:
  """The examples of frames [start, stop) of one recording, read from its video a chunk at a time."""
  recording: fmf_format.Recording
  start: int
  stop: int
  masks: bool
  bar: Any

  def __call__(self):
    rec = self.recording
    for lo in range(self.start, self.stop, fmf_format.CHUNK_FRAMES):
      hi = min(lo + fmf_format.CHUNK_FRAMES, self.stop)
      chunk = {"image": rec.frames[lo:hi], **({"mask": rec.masks[lo:hi]} if self.masks else {})}
      for k in range(hi - lo):
        yield f"{rec.name}/{lo + k}", {name: values[k] for name, values in chunk.items()}
      self.bar.update(hi - lo)
    if self.stop == rec.num_frames and self.bar.n >= self.bar.total:
      self.bar.close()


def build_index(root: str, recordings: Sequence[fmf_format.Recording]) -> dict[str, np.ndarray]:
  """Concatenated per-frame and per-row arrays of all recordings, with offsets and global split indices."""
  shapes = {rec.image_shape for rec in recordings}
  if len(shapes) != 1:
    raise fmf_format.FmfFormatError(f"{root}/videos: recordings differ in image size: {sorted(shapes)}")
  forms = {isinstance(rec.masks, fmf_format.FrameMasks) for rec in recordings}
  if len(forms) != 1:
    raise fmf_format.FmfFormatError(f"{root}/videos: some recordings hold pixel masks, others one label per frame")
  counts = {rec.name: rec.num_frames for rec in recordings}
  offsets = np.concatenate([[0], np.cumsum([rec.num_frames for rec in recordings])]).astype(np.int64)
  index = {
      "names": np.array([rec.name for rec in recordings]),
      "offsets": offsets,
      "image_shape": np.array(next(iter(shapes)), np.int64),
      "has_masks": np.array(not isinstance(recordings[0].masks, fmf_format.FrameMasks)),
      "labels": np.concatenate([rec.labels for rec in recordings]).astype(np.int8),
      "frame_seconds": np.concatenate([rec.frame_seconds for rec in recordings]),
      "current": np.concatenate([rec.current for rec in recordings]),
      "current_seconds": np.concatenate([rec.current_seconds for rec in recordings]),
      "current_offsets": np.concatenate([[0], np.cumsum([len(rec.current) for rec in recordings])]).astype(np.int64),
      "start_times": np.array([str(rec.start_time) for rec in recordings]),
      "events": np.array([json.dumps(fmf_format.load_events(root, rec.name)) for rec in recordings]),
  }
  for split in fmf_format.SPLITS:
    per_rec = fmf_format.load_split(root, split, counts)
    index[f"split_{split}"] = np.concatenate([offsets[k] + per_rec[rec.name] for k, rec in enumerate(recordings)])
  truths = [fmf_format.truth_path(root, rec.name) for rec in recordings]
  if all(os.path.isfile(p) for p in truths):
    index["mist"] = np.concatenate([np.load(p)["mist"] for p in truths]).astype(np.float32)
  return index


class _RecordCache(threading.local):
  """Per-thread cache of the last records read; pickles as a fresh, empty cache (for worker processes)."""

  def __reduce__(self):
    return (_RecordCache, ())


class _FrameView:
  """(T, ...) view of one recording's `key` ('image' or 'mask') in the array_record data source.

  Both views of a recording share a per-thread cache of the last records read, so reading a clip's
  frames and then the mask of its last frame costs one read per frame. `downsampled` maps a factor to
  this recording's frames block-averaged by it, where `fmjax.data.downsampled.ensure` has made them.
  """

  def __init__(self, source, offset: int, length: int, shape: tuple, key: str, cache: _RecordCache):
    self._source, self._offset, self._key, self._cache = source, offset, key, cache
    self.shape, self.dtype = (length,) + shape, np.uint8
    self.downsampled: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return self.shape[0]

  def _records(self, index: np.ndarray) -> list[dict]:
    keys = (self._offset + index).tolist()
    cached = getattr(self._cache, "records", {})
    missing = [k for k in keys if k not in cached]
    if missing:
      fetched = [self._source[k] for k in missing]  # __getitems__ starts a thread pool per call: slower
      cached = {k: cached[k] for k in keys if k in cached} | dict(zip(missing, fetched))
      self._cache.records = cached
    return [cached[k] for k in keys]

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, slice):
      index = np.arange(*index.indices(len(self)))
    scalar = np.ndim(index) == 0
    index = np.atleast_1d(np.asarray(index, np.int64))
    if ((index < 0) | (index >= len(self))).any():
      raise IndexError(f"frame index out of range [0, {len(self)}): {index.min()}..{index.max()}")
    out = np.stack([r[self._key] for r in self._records(index.ravel())]).reshape(index.shape + self.shape[1:])
    return out[0] if scalar else out


@dataclasses.dataclass
class PreparedFmf:
  """A prepared FMF root: recordings backed by array_record, plus splits, events and truth."""
  root: str
  data_dir: str
  recordings: list[fmf_format.Recording]
  index: dict[str, np.ndarray]
  _truths: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def has_masks(self) -> bool:
    """False for class-level data (one label per frame): its masks are its labels, whole-frame."""
    return bool(self.index.get("has_masks", True))

  @property
  def fps(self) -> float:
    """Video frames per second: every recording's frames over the seconds they span."""
    spans = [int(r.frame_seconds[-1]) - int(r.frame_seconds[0]) + 1 for r in self.recordings]
    return sum(r.num_frames for r in self.recordings) / sum(spans)

  def frame_stride(self, seconds: float) -> int:
    """The stride over a split's frames that spaces samples about `seconds` apart (at least 1: 0 gives
    every frame), so a setting in seconds means the same time on 2-fps and 25-fps data."""
    return max(1, round(seconds * self.fps))

  def split(self, name: str) -> np.ndarray:
    """(n, 2) array of (recording position, frame index) of a split's samples."""
    global_idx = self.index[f"split_{name}"]
    rec = np.searchsorted(self.index["offsets"], global_idx, side="right") - 1
    return np.stack([rec, global_idx - self.index["offsets"][rec]], axis=1)

  def events(self, recording: int) -> list[dict] | None:
    return json.loads(str(self.index["events"][recording]))

  def truth(self, recording: int) -> dict[str, np.ndarray] | None:
    """The synthetic furnace's ground truth of a recording (`truth/<name>.npz` in the root: per-frame
    mist, glare and spot_radius, per-second steadiness), or None where the root has none (the real
    benchmark)."""
    if recording not in self._truths:
      path = fmf_format.truth_path(self.root, self.recordings[recording].name)
      if os.path.isfile(path):
        with np.load(path) as f:
          self._truths[recording] = {k: f[k] for k in f.files}
      else:
        self._truths[recording] = None
    return self._truths[recording]

  def mist(self, recording: int) -> np.ndarray | None:
    if "mist" not in self.index:
      return None
    lo, hi = self.index["offsets"][recording:recording + 2]
    return self.index["mist"][lo:hi]


def builder(root: str, data_dir: str | None = None) -> FmfFrames:
  names = fmf_format.list_recordings(root)
  video = fmf_format.video_path(root, names[0])
  _, h, w = fmf_format.check_video(video)
  config = FmfConfig(name=fingerprint(root), description=f"FMF root {os.path.abspath(root)}",
                     root=os.path.abspath(root), height=h, width=w, masks=fmf_format.has_masks(video))
  return FmfFrames(config=config, data_dir=data_dir or default_data_dir(), file_format="array_record")


def _finished(b: FmfFrames) -> bool:
  return os.path.isfile(os.path.join(b.data_dir, "dataset_info.json"))


def _remove_leftovers(config_dir: str) -> None:
  """Removes what killed preparations left: TFDS's `incomplete.*` folders in `config_dir` (whose lock the
  caller holds, so no living preparation owns them), and in the other configs of the same data dir (a
  root whose files changed since is prepared under a new name) whose lock no one holds."""
  def leftovers(folder: str) -> list[str]:
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.startswith("incomplete.")]

  for path in leftovers(config_dir):
    staging.remove_leftover(path, "a preparation")
  builder_dir = os.path.dirname(config_dir)
  for other in sorted(os.listdir(builder_dir)):
    folder = os.path.join(builder_dir, other)
    if folder != config_dir and os.path.isdir(folder) and leftovers(folder):
      with locks.exclusive(os.path.join(folder, _LOCK_FILE), wait=False) as held:
        for path in leftovers(folder) if held else []:
          staging.remove_leftover(path, "a preparation")


def prepared_bytes(summaries: Sequence[dict]) -> int:
  """Bytes the records of a validated root take: frames (and masks), raw, plus a little per record."""
  return sum(s["frames"] * (_pixel_bytes(*s["image"], s["labels"] == "masks") + _RECORD_OVERHEAD) for s in summaries)


def _prepare(root: str, b: FmfFrames) -> None:
  """Validates `root`, then writes its records into `b.data_dir`, atomically, unless another process
  did while this one waited for the lock."""
  summaries = validate.validate_root(root)  # fail on bad input before writing anything
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(b.data_dir)))
  paths.ensure_writable_dir(data_dir, "data dir")
  config_dir = os.path.dirname(b.data_dir)
  os.makedirs(config_dir, exist_ok=True)
  with locks.exclusive(os.path.join(config_dir, _LOCK_FILE), waiting=f"preparing {root} in {config_dir}"):
    if _finished(b):
      return
    _remove_leftovers(config_dir)
    need, free = prepared_bytes(summaries), shutil.disk_usage(config_dir).free
    if need > free:
      raise errors.DataError(f"{config_dir}: {need / 1e9:.1f} GB are needed to prepare {root}, "
                             f"{free / 1e9:.1f} GB are free; free some space or pick another --data_dir")
    frames = sum(s["frames"] for s in summaries)
    took = console.estimate(frames, *summaries[0]["image"], console.PREPARE_FRAMES_PER_S)
    console.say(f"preparing {root} ({len(summaries)} recordings, {frames} frames, {need / 1e9:.1f} GB) as "
                f"array_record in {b.data_dir}; first use only, about {took} on 2 CPU cores")
    try:
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    except RuntimeError as e:  # array_record's writer reports a failed write (a full disk, a quota) so
      raise errors.DataError(f"{config_dir}: writing the records of {root} failed ({e}); nothing was kept, "
                             "a rerun starts it again") from None


def _open(root: str, data_dir: str | None) -> FmfFrames:
  """The builder of `root`'s prepared records, prepared first where they are missing."""
  b = builder(root, data_dir)
  if not _finished(b):
    _prepare(root, b)
    b = builder(root, data_dir)  # made anew: one made before another process prepared the root lacks its info
  return b


def load(root: str, data_dir: str | None = None) -> PreparedFmf:
  """Prepares `root` into `data_dir` unless already cached, and opens it for random access."""
  try:
    b = _open(root, data_dir)
    source = b.as_data_source(split=FRAMES_SPLIT)
    index = FmfIndex()
    index.load_metadata(b.data_dir)  # TFDS restores only its own metadata.json; ours is read here
  except errors.UserError:
    raise
  except OSError as e:  # no space left, a file that cannot be read or written: the user's to fix
    raise errors.DataError(f"{e.filename or root}: preparing or opening {root} failed: {e.strerror or e}; "
                           "nothing half-written was kept, a rerun starts it again") from None
  h, w = (int(v) for v in index["image_shape"])
  recordings = []
  for k, name in enumerate(index["names"]):
    lo, hi = (int(v) for v in index["offsets"][k:k + 2])
    clo, chi = (int(v) for v in index["current_offsets"][k:k + 2])
    cache = _RecordCache()
    labels = index["labels"][lo:hi].astype(np.int32)
    recordings.append(fmf_format.Recording(
        name=str(name),
        frames=_FrameView(source, lo, hi - lo, (h, w, 3), "image", cache),
        masks=(_FrameView(source, lo, hi - lo, (h, w), "mask", cache) if index.get("has_masks", True)
               else fmf_format.FrameMasks(labels, h, w)),
        labels=labels,
        frame_seconds=index["frame_seconds"][lo:hi],
        current=index["current"][clo:chi], current_seconds=index["current_seconds"][clo:chi],
        start_time=np.datetime64(str(index["start_times"][k]), "s")))
  return PreparedFmf(root=os.path.abspath(root), data_dir=b.data_dir, recordings=recordings, index=index)


def storage_bytes(prepared: PreparedFmf) -> int:
  """Bytes on disk of the prepared dataset (records + index)."""
  return sum(os.path.getsize(os.path.join(prepared.data_dir, f)) for f in os.listdir(prepared.data_dir))


def describe(prepared: PreparedFmf) -> dict[str, Any]:
  return {"data_dir": prepared.data_dir, "frames": int(prepared.index["offsets"][-1]),
          "recordings": len(prepared.recordings), "bytes": storage_bytes(prepared),
          **{split: int(prepared.index[f"split_{split}"].size) for split in fmf_format.SPLITS}}


def load_from_config(data) -> PreparedFmf:
  """The prepared dataset a job's `config.data` names (see configs/common.py). In a multi-process run
  process 0 generates and prepares it while the others wait, then they open what it wrote."""
  from fmjax.data import synthetic

  def prepare() -> PreparedFmf:
    data_dir = data.data_dir or default_data_dir()
    synthetic_config = synthetic.SyntheticConfig(**data.synthetic.to_dict())
    return load(data.root or synthetic.ensure(synthetic_config, data_dir, progress=True), data_dir)

  return distributed.first_then_others("data", prepare)
