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

A preparation ends by writing a manifest (`fmjax.data.manifest`, last, after TFDS has renamed its folder
into place): every file the dataset needs with its size, and the record count. A prepared dataset is
used only when its manifest lists files that are all there with those sizes and an index that loads
and agrees with itself; otherwise it is prepared again, after one line saying why. One prepared before
manifests were kept is checked by what TFDS recorded (its shards, their total bytes, the index) and
adopted, its manifest written, rather than prepared again (tens of minutes to hours at the release's
size). `verify` reads every record back (`launch/data.py prepare DIR --verify`).

A root is named by a fingerprint of its files (`fmjax.data.fingerprint`): by default their sizes and times
('stat'; a root changed in place is prepared again under a new name), or with 'content' a hash of
their bytes, for roots whose files may change without either (a copy made with `cp -p`).

    prepared = tfds_fmf.load(root)                 # prepares on first use, then reuses the cache
    rec = prepared.recordings[0]                   # same fields as fmf_format.Recording
    rec.frames[[5, 6, 7]]                          # (3, H, W, 3) uint8, read from array_record
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from fmjax.data import fingerprint, fmf_format, ground_truth, manifest, staging, validate
from fmjax.runtime import console, distributed, errors, locks, paths

VERSION = "1.0.0"
FRAMES_SPLIT = "frames"
_INDEX_FILE = "fmf_index.npz"
_INFO_FILES = ("dataset_info.json", "features.json")  # what TFDS writes beside the shards
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
  """One config per FMF root; named by `fingerprint.of`, so changed files give a new config."""
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
      "events": np.array([json.dumps(ground_truth.load_events(root, rec.name, int(rec.current_seconds[-1]) + 1))
                          for rec in recordings]),
  }
  for split, per_rec in fmf_format.load_splits(root, counts).items():
    index[f"split_{split}"] = np.concatenate([offsets[k] + per_rec[rec.name] for k, rec in enumerate(recordings)])
  truths = [ground_truth.load_truth(root, rec) for rec in recordings]
  if all(truth is not None for truth in truths):
    index["mist"] = np.concatenate([truth["mist"] for truth in truths]).astype(np.float32)
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
  source: Any = dataclasses.field(default=None, repr=False)  # the records (TFDS's array_record data source)
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
      self._truths[recording] = ground_truth.load_truth(self.root, self.recordings[recording])
    return self._truths[recording]

  def mist(self, recording: int) -> np.ndarray | None:
    if "mist" not in self.index:
      return None
    lo, hi = self.index["offsets"][recording:recording + 2]
    return self.index["mist"][lo:hi]


def _config(root: str, kind: str) -> FmfConfig:
  names = fmf_format.list_recordings(root)
  video = fmf_format.video_path(root, names[0])
  _, h, w = fmf_format.check_video(video)
  return FmfConfig(name=fingerprint.of(root, kind), description=f"FMF root {os.path.abspath(root)}",
                   root=os.path.abspath(root), height=h, width=w, masks=fmf_format.has_masks(video))


def _builder(config: FmfConfig, data_dir: str) -> FmfFrames:
  return FmfFrames(config=config, data_dir=data_dir, file_format="array_record")


def builder(root: str, data_dir: str | None = None, fingerprint_kind: str = "stat") -> FmfFrames:
  return _builder(_config(root, fingerprint_kind), data_dir or default_data_dir())


def prepared_dir(config: FmfConfig, data_dir: str) -> str:
  """The folder of `config`'s records in `data_dir` (the builder's `data_dir`), known without making the
  builder, which reads whatever dataset_info.json it finds there."""
  return os.path.join(data_dir, FmfFrames.name, config.name, VERSION)


def _read_index(directory: str, records: int) -> FmfIndex:
  """The index in `directory`, checked against itself and `records`; `manifest.Unusable` otherwise."""
  path = os.path.join(directory, _INDEX_FILE)
  index = FmfIndex()
  try:
    index.load_metadata(directory)
  except FileNotFoundError:
    raise manifest.Unusable(f"{path} is missing") from None
  except Exception as e:  # zipfile, numpy and OS errors alike: a damaged file
    raise manifest.Unusable(f"{path} cannot be read ({type(e).__name__}: {e})") from None
  manifest.check_index(index, path, records)
  return index


def _check(directory: str) -> FmfIndex:
  """The index of the complete prepared dataset in `directory`: its manifest there, every file it lists
  there with its size, the index agreeing with the record count; `manifest.Unusable` (why not) otherwise."""
  return _read_index(directory, manifest.check_files(directory)["records"])


def _manifest_of(b: FmfFrames) -> dict[str, Any]:
  """The manifest of `b`'s prepared dataset, from what TFDS recorded of its split: the record count, the
  records of each shard, and the size of every file the dataset needs; `manifest.Unusable` where one is missing."""
  split = b.info.splits[FRAMES_SPLIT]
  shards = [os.path.basename(str(path)) for path in split.filepaths]
  listed = {}
  for name in shards + list(_INFO_FILES) + [_INDEX_FILE]:
    path = os.path.join(b.data_dir, name)
    if not os.path.isfile(path):
      raise manifest.Unusable(f"{path} is missing")
    listed[name] = os.path.getsize(path)
  return {"records": int(split.num_examples), "shards": dict(zip(shards, (int(n) for n in split.shard_lengths))),
          "files": listed}


def _from_before_manifests(directory: str) -> bool:
  return (os.path.isfile(os.path.join(directory, "dataset_info.json"))
          and not os.path.exists(os.path.join(directory, manifest.FILE)))


def _adopt(config: FmfConfig, data_dir: str, write: bool = True) -> FmfIndex:
  """The index of a dataset prepared before manifests were kept, checked by what TFDS recorded of it
  (every shard there, their bytes adding up to the bytes it wrote, an index agreeing with its record
  count), its manifest then written (`write`); `manifest.Unusable` (why not) otherwise."""
  directory = prepared_dir(config, data_dir)
  try:
    b = _builder(config, data_dir)
    split = b.info.splits[FRAMES_SPLIT]
    listed = _manifest_of(b)
  except manifest.Unusable:
    raise
  except Exception as e:  # TFDS's errors for a damaged dataset_info.json are of many types
    raise manifest.Unusable(f"{directory}/dataset_info.json cannot be read ({type(e).__name__}: {e})") from None
  shard_bytes = sum(listed["files"][name] for name in listed["shards"])
  if shard_bytes != int(split.num_bytes):
    raise manifest.Unusable(f"{directory}: its record shards hold {shard_bytes} bytes, {int(split.num_bytes)} when "
                            "they were written (dataset_info.json)")
  index = _read_index(directory, listed["records"])
  if write:
    manifest.write(directory, listed)
  console.say(f"{directory}: prepared before fmjax kept manifests; its {len(listed['shards'])} shards, their bytes "
              f"and its index of {listed['records']} records check out, so it is used as it is"
              + (" (manifest written)" if write else " (read-only: no manifest written)"))
  return index


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


def _prepare(root: str, config: FmfConfig, data_dir: str) -> FmfIndex:
  """Validates `root`, then, holding the preparation lock, returns the index of its complete prepared
  dataset: the one another process finished while this one waited, one from before manifests that
  checks out, or one written now, whatever was there removed first after one line saying why."""
  summaries = validate.validate_root(root)  # fail on bad input before writing anything
  paths.ensure_writable_dir(data_dir, "data dir")
  directory = prepared_dir(config, data_dir)
  config_dir = os.path.dirname(directory)
  os.makedirs(config_dir, exist_ok=True)
  with locks.exclusive(os.path.join(config_dir, _LOCK_FILE), waiting=f"preparing {root} in {config_dir}"):
    try:
      return _check(directory)
    except manifest.Unusable as e:
      why = str(e)
    if _from_before_manifests(directory):
      try:
        return _adopt(config, data_dir)
      except manifest.Unusable as e:
        why = str(e)
    if os.path.exists(directory):
      console.say(f"{why}; preparing again")
      shutil.rmtree(directory)
    _remove_leftovers(config_dir)
    need, free = prepared_bytes(summaries), shutil.disk_usage(config_dir).free
    if need > free:
      raise errors.DataError(f"{config_dir}: {need / 1e9:.1f} GB are needed to prepare {root}, "
                             f"{free / 1e9:.1f} GB are free; free some space or pick another --data_dir")
    frames = sum(s["frames"] for s in summaries)
    took = console.estimate(frames, *summaries[0]["image"], console.PREPARE_FRAMES_PER_S)
    console.say(f"preparing {root} ({len(summaries)} recordings, {frames} frames, {need / 1e9:.1f} GB) as "
                f"array_record in {directory}; first use only, about {took} on 2 CPU cores")
    b = _builder(config, data_dir)
    try:
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    except RuntimeError as e:  # array_record's writer reports a failed write (a full disk, a quota) so
      raise errors.DataError(f"{config_dir}: writing the records of {root} failed ({e}); nothing was kept, "
                             "a rerun starts it again") from None
    try:
      listed = _manifest_of(b)
      index = _read_index(directory, listed["records"])
    except manifest.Unusable as e:
      raise errors.DataError(f"{e}, right after preparing {root}; a rerun prepares it again") from None
    manifest.write(directory, listed)  # last: its presence says the dataset is complete
    return index


def _open(root: str, config: FmfConfig, data_dir: str) -> FmfIndex:
  """The index of `root`'s complete prepared dataset, prepared first where it is missing or damaged."""
  directory = prepared_dir(config, data_dir)
  try:
    return _check(directory)
  except manifest.Unusable:
    if _from_before_manifests(directory) and not os.access(directory, os.W_OK):
      try:  # a copy on a read-only share: used as it is where it checks out, as before manifests
        return _adopt(config, data_dir, write=False)
      except manifest.Unusable as e:
        raise errors.DataError(f"{e}; {directory} cannot be written, so it cannot be prepared again there: "
                               "prepare it into another --data_dir") from None
  return _prepare(root, config, data_dir)


def load(root: str, data_dir: str | None = None, fingerprint_kind: str = "stat") -> PreparedFmf:
  """Prepares `root` into `data_dir` unless already cached, and opens it for random access;
  `fingerprint_kind` ('stat' or 'content': `fingerprint.of`) names the root."""
  data_dir = data_dir or default_data_dir()
  try:
    config = _config(root, fingerprint.check(fingerprint_kind))
    index = _open(root, config, data_dir)
    source = _builder(config, data_dir).as_data_source(split=FRAMES_SPLIT)
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
  return PreparedFmf(root=os.path.abspath(root), data_dir=prepared_dir(config, data_dir), recordings=recordings,
                     index=index, source=source)


def verify(prepared: PreparedFmf) -> int:
  """Reads every record of `prepared` back, in order with a bar, and checks that it decodes to the shapes
  the index gives (with masks: to its frame's label too), after the index's own consistency; returns the
  record count. A `DataError` names the first bad file or record and how to prepare the dataset again."""
  directory = prepared.data_dir
  again = (f"the prepared copy is damaged: remove {directory} and prepare it again "
           f"(python launch/data.py prepare {prepared.root})")
  try:
    listed = manifest.read(directory)
    records = listed["records"]
    manifest.check_index(prepared.index, os.path.join(directory, _INDEX_FILE), records)
  except manifest.Unusable as e:
    raise errors.DataError(f"{e}; {again}") from None
  if len(prepared.source) != records:
    raise errors.DataError(f"{directory}: {len(prepared.source)} records can be read, its manifest lists {records}; "
                           f"{again}")
  h, w = (int(v) for v in prepared.index["image_shape"])
  offsets, labels = prepared.index["offsets"], prepared.index["labels"]
  shard_ends = np.cumsum(list(listed["shards"].values()))
  shapes = {"image": (h, w, 3), **({"mask": (h, w)} if prepared.has_masks else {})}

  def where(k: int) -> str:
    shard = list(listed["shards"])[int(np.searchsorted(shard_ends, k, side="right"))]
    recording = int(np.searchsorted(offsets, k, side="right")) - 1
    return (f"{os.path.join(directory, shard)}: record {k} ({prepared.recordings[recording].name} frame "
            f"{k - int(offsets[recording])})")

  for k in console.bar(range(records), phase="verifying", unit="record"):
    try:
      record = prepared.source[k]
    except Exception as e:  # array_record's and the decoder's errors alike: a damaged shard
      raise errors.DataError(f"{where(k)} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}); "
                             f"{again}") from None
    for key, shape in shapes.items():
      value = record.get(key)
      if getattr(value, "shape", None) != shape or getattr(value, "dtype", None) != np.uint8:
        raise errors.DataError(f"{where(k)}: its {key} is {getattr(value, 'shape', value)} "
                               f"{getattr(value, 'dtype', '')}, the index says {shape} uint8; {again}")
    if prepared.has_masks and (record["mask"].max() > 0) != (labels[k] > 0):
      raise errors.DataError(f"{where(k)}: its mask disagrees with the frame's label {labels[k]} in the index; "
                             f"{again}")
  return records


def storage_bytes(prepared: PreparedFmf) -> int:
  """Bytes on disk of the prepared dataset (records + index)."""
  return sum(os.path.getsize(os.path.join(prepared.data_dir, f)) for f in os.listdir(prepared.data_dir))


def describe(prepared: PreparedFmf) -> dict[str, Any]:
  return {"data_dir": prepared.data_dir, "frames": int(prepared.index["offsets"][-1]),
          "recordings": len(prepared.recordings), "bytes": storage_bytes(prepared),
          **{split: int(prepared.index[f"split_{split}"].size) for split in fmf_format.SPLITS}}


def load_from_config(data) -> PreparedFmf:
  """The prepared dataset a job's `config.data` names (see configs/common.py; `data.fingerprint` names
  the root: `fingerprint.of`). In a multi-process run process 0 generates and prepares it while the
  others wait, then they open what it wrote."""
  from fmjax.data import synthetic

  kind = fingerprint.check(data.get("fingerprint", "stat"))  # configs saved before the key: 'stat'

  def prepare() -> PreparedFmf:
    data_dir = data.data_dir or default_data_dir()
    synthetic_config = synthetic.SyntheticConfig(**data.synthetic.to_dict())
    return load(data.root or synthetic.ensure(synthetic_config, data_dir, progress=True), data_dir, kind)

  return distributed.first_then_others("data", prepare)
