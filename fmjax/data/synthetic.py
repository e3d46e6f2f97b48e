"""A synthetic fused magnesium furnace that writes the FMF-Benchmark layout plus ground truth.

The physics it imitates:
  * three-phase arc current of about 6,000-14,000 A, two rows per second, fluctuating strongly while
    smelting is normal and becoming unusually steady from an anomaly's *current onset*;
  * `lead` seconds later a hot spot appears on the shell (red -> yellow/white core) and grows; over the
    event's last seconds it cools (shrinks and dims) and at the event's end it is gone. It is labelled
    per pixel while it is visible, so a clip's label is what its last frame shows;
  * water mist hides the spot, flame light flickers, the sensor adds noise. Routine sprays come at
    random times and are mostly partial; an overheating shell is sprayed often and mostly heavily;
  * distractors make each modality ambiguous alone: steady-current stretches with no visible anomaly,
    and bright glare on the shell with no current signature.

Besides the benchmark layout it writes `events/<name>.json` (the anomaly events) and
`truth/<name>.npz` (per-frame mist density, glare and spot radius; per-second steadiness). Every
knob is a field of `SyntheticConfig`; a seed fixes the output. Frames are rendered with vectorised
numpy in chunks, so memory stays bounded for any duration.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np

from fmjax.data import fmf_format, staging
from fmjax.runtime import console, errors, locks, paths

_CHUNK = 256  # frames rendered at a time
GENERATOR_VERSION = 2  # bump when the same knobs render different data: cached roots are then remade
_MIN_CURRENT, _MID_CURRENT, _MAX_CURRENT = 6000.0, 10000.0, 14000.0


# Furnaces shaped like the benchmark's releases (`launch/data.py synth --preset=NAME`; flags given beside a
# preset override its values). pixel-level: the release's 3 recordings of 1 h at 25 fps, 64x64, 270,000
# frames; class-level: 2.2 million frames at 25 fps (8 recordings of about 3 h), one label per frame.
PRESETS = {
    "pixel-level": dict(recordings=3, duration_s=3600, fps=25.0),
    "class-level": dict(recordings=8, duration_s=11000, fps=25.0, class_level=True),
}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Knobs of the synthetic furnace; the defaults give a realistic, laptop-sized benchmark."""
  recordings: int = 6
  duration_s: int = 3600           # per recording
  fps: float = 2.0                 # video frames per second (the real benchmark: ~25)
  image_size: int = 64
  lead_min_s: float = 180.0        # current onset -> visual onset
  lead_max_s: float = 300.0
  anomaly_min_s: float = 150.0     # visible duration of an anomaly
  anomaly_max_s: float = 400.0
  abnormal_ratio: float = 0.4      # target share of abnormal frames; sets the normal gaps
  min_gap_s: float = 60.0          # least normal time between an event's end and the next onset
  steady_min: float = 0.12         # current fluctuation during steady stretches, relative to normal
  steady_max: float = 0.30
  current_swing_a: float = 1500.0  # std of the normal fluctuation, amperes
  steady_distractor_rate: float = 0.4   # chance a normal gap holds a steady stretch without anomaly
  glare_per_hour: float = 6.0      # bright glare episodes without a current signature
  mist_per_hour: float = 6.0       # routine water-spray episodes at random times
  mist_event_prob: float = 0.7     # chance an overheating event is sprayed (mist over the spot)
  mist_heavy_prob: float = 0.6     # chance an event's spray is heavy (hides the spot almost fully)
  routine_heavy_prob: float = 0.5  # chance a routine spray is heavy
  mist_level: float = 1.0          # scales all mist density (0 switches mist off)
  flicker: float = 0.08            # flame-light brightness flicker amplitude
  noise_std: float = 3.0           # sensor noise, grey levels
  spot_radius_min: float = 6.0     # final hot-spot radius range, pixels
  spot_radius_max: float = 14.0
  spot_radius_start: float = 3.0   # radius when the spot first shows, pixels
  cooling_s: float = 20.0          # the spot cools (shrinks, dims) over the event's last seconds
  test_fraction: float = 0.3       # the last share of each recording is the test split
  class_level: bool = False        # True: one label per frame in each video's 'label' (no pixel masks)
  start_time: str = "2023-05-10 21:00:00"
  seed: int = 0

  def validate(self) -> None:
    checks = [
        (self.recordings >= 1, "recordings must be >= 1"),
        (self.fps > 0, "fps must be > 0"),
        (self.image_size >= 16, "image_size must be >= 16"),
        (0 < self.lead_min_s <= self.lead_max_s, "need 0 < lead_min_s <= lead_max_s"),
        (0 < self.anomaly_min_s <= self.anomaly_max_s, "need 0 < anomaly_min_s <= anomaly_max_s"),
        (0 < self.abnormal_ratio < 1, "abnormal_ratio must lie in (0, 1)"),
        (0 < self.steady_min <= self.steady_max <= 1, "need 0 < steady_min <= steady_max <= 1"),
        (0 <= self.test_fraction < 1, "test_fraction must lie in [0, 1)"),
        (1 <= self.spot_radius_min <= self.spot_radius_max, "need 1 <= spot_radius_min <= spot_radius_max"),
        (2 * (0.6 * self.spot_radius_max + 2) <= 0.85 * self.image_size,  # room for a spot's centre (_schedule)
         f"spot_radius_max={self.spot_radius_max:g} is too large for image_size={self.image_size} (at most "
         f"{(0.85 * self.image_size / 2 - 2) / 0.6:.1f})"),
        (self.spot_radius_start >= 1, "spot_radius_start must be >= 1"),
        (self.cooling_s >= 0, "cooling_s must be >= 0"),
        (all(0 <= p <= 1 for p in (self.mist_event_prob, self.mist_heavy_prob, self.routine_heavy_prob)),
         "mist_event_prob, mist_heavy_prob and routine_heavy_prob must lie in [0, 1]"),
        (self.duration_s >= self.lead_max_s + self.anomaly_min_s + self.min_gap_s,
         f"duration_s={self.duration_s} is too short for one event (needs >= lead_max_s + anomaly_min_s + "
         f"min_gap_s = {self.lead_max_s + self.anomaly_min_s + self.min_gap_s:g})"),
    ]
    for ok, message in checks:
      if not ok:
        raise errors.ConfigError(f"SyntheticConfig: {message}")


# ----------------------------------------------------------------------------- schedule


def _schedule(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, list]:
  """Anomaly events and distractor/mist intervals (seconds) of one recording.

  Each normal gap is sized so that the running share of abnormal (visible-anomaly) time tracks
  `abnormal_ratio` after one more average event, then jittered; the lead counts as normal time.
  """
  size, duration = cfg.image_size, float(cfg.duration_s)
  mean_visible = (cfg.anomaly_min_s + cfg.anomaly_max_s) / 2
  mean_lead = (cfg.lead_min_s + cfg.lead_max_s) / 2
  events, steady, abnormal = [], [], 0.0
  t = min(cfg.min_gap_s + rng.uniform(0, 2 * cfg.min_gap_s), duration - cfg.lead_max_s - cfg.anomaly_min_s)
  while True:
    lead = rng.uniform(cfg.lead_min_s, cfg.lead_max_s)
    visible = rng.uniform(cfg.anomaly_min_s, cfg.anomaly_max_s)
    if t + lead + cfg.min_gap_s > duration:  # too little left to see the anomaly
      break
    visible = min(visible, duration - t - lead)  # a recording may end during an anomaly
    radius = rng.uniform(cfg.spot_radius_min, cfg.spot_radius_max)
    margin = min(radius * 0.6 + 2, size / 2 - 1)
    events.append({
        "current_onset_s": round(t, 2), "visual_onset_s": round(t + lead, 2), "lead_s": round(lead, 2),
        "end_s": round(t + lead + visible, 2),
        "center": [round(rng.uniform(margin + size * 0.15, size - margin), 2),
                   round(rng.uniform(margin, size - margin), 2)],
        "radius": round(radius, 2), "steadiness": round(rng.uniform(cfg.steady_min, cfg.steady_max), 3),
    })
    t += lead + visible
    abnormal += visible
    target_gap = (abnormal + mean_visible) / cfg.abnormal_ratio - t - mean_lead - mean_visible
    gap = max(cfg.min_gap_s, target_gap * rng.uniform(0.8, 1.2))
    steady.extend(_steady_distractor(cfg, rng, t, min(t + gap, duration)))
    t += gap
  steady.extend(_steady_distractor(cfg, rng, t, duration))
  episodes = lambda per_hour: rng.poisson(per_hour * duration / 3600.0)
  glare = [(s, s + rng.uniform(5, 30)) for s in rng.uniform(0, duration, episodes(cfg.glare_per_hour))]
  mist = [(s, s + rng.uniform(20, 120), _mist_density(cfg, rng, cfg.routine_heavy_prob))
          for s in rng.uniform(0, duration, episodes(cfg.mist_per_hour))]
  for ev in events:  # water is sprayed on an overheating shell, heavily more often than routinely
    if rng.uniform() < cfg.mist_event_prob:
      start = rng.uniform(ev["visual_onset_s"], max(ev["visual_onset_s"], ev["end_s"] - 30))
      mist.append((start, min(start + rng.uniform(40, 180), ev["end_s"]),  # stops once the shell is cool
                   _mist_density(cfg, rng, cfg.mist_heavy_prob)))
  return {"events": events, "steady": steady, "glare": glare, "mist": mist}


def _steady_distractor(cfg, rng, gap_start: float, gap_end: float) -> list[tuple]:
  room = gap_end - gap_start - 60
  if room < 60 or rng.uniform() >= cfg.steady_distractor_rate:
    return []
  length = rng.uniform(60, min(room, 240))
  start = gap_start + 30 + rng.uniform(0, room - length)
  return [(start, start + length, rng.uniform(cfg.steady_min, cfg.steady_max))]


def _mist_density(cfg: SyntheticConfig, rng: np.random.Generator, heavy_prob: float) -> float:
  heavy = rng.uniform() < heavy_prob
  return cfg.mist_level * (rng.uniform(0.96, 0.995) if heavy else rng.uniform(0.3, 0.6))


def _interval_profile(times: np.ndarray, intervals, values=None, ramp: float = 10.0) -> np.ndarray:
  """Sum over intervals of value * trapezoid(start, end, ramp) evaluated at `times` (vectorised)."""
  out = np.zeros_like(times, dtype=np.float64)
  for k, (start, end) in enumerate(intervals):
    rise = np.clip((times - start) / ramp + 0.5, 0, 1) * np.clip((end - times) / ramp + 0.5, 0, 1)
    out += rise * (1.0 if values is None else values[k])
  return out


# ----------------------------------------------------------------------------- current


def _smoothed(rng, n: int, tau_rows: float, size=()) -> np.ndarray:
  """Unit-variance noise low-passed with an exponential kernel of `tau_rows` rows (vectorised)."""
  kernel = np.exp(-np.arange(int(6 * tau_rows) + 1) / tau_rows)
  kernel /= np.sqrt((kernel ** 2).sum())
  white = rng.standard_normal(size + (n + len(kernel),))
  return np.apply_along_axis(lambda x: np.convolve(x, kernel, "valid")[:n], -1, white)


def _simulate_current(cfg: SyntheticConfig, rng, plan: dict, seconds: int) -> tuple[np.ndarray, np.ndarray]:
  """(current (2*seconds, 3) float32, steadiness per second (seconds,)) for one recording."""
  rows = fmf_format.ROWS_PER_SECOND * seconds
  t_sec = np.arange(seconds, dtype=np.float64)
  intervals = [(e["current_onset_s"], e["end_s"]) for e in plan["events"]] + [s[:2] for s in plan["steady"]]
  depth = [1 - e["steadiness"] for e in plan["events"]] + [1 - s[2] for s in plan["steady"]]
  steadiness = 1.0 - np.clip(_interval_profile(t_sec, intervals, depth, ramp=15.0), 0, 0.95)
  # Arc-length swings shared by the phases, plus per-phase fast fluctuation: strong while normal.
  jumps = np.repeat(rng.standard_normal(rows // 40 + 2), 40)[:rows]  # a new arc length every ~20 s
  kernel = np.exp(-np.arange(24) / 6.0)
  swings = np.convolve(jumps, kernel / kernel.sum(), "full")[:rows] * 1.6
  fast = _smoothed(rng, rows, 3.0, (3,)).T
  fluctuation = cfg.current_swing_a * (0.7 * swings[:, None] + 0.6 * fast)
  level = _MID_CURRENT + 600 * _smoothed(rng, rows, 600.0)[:, None] + rng.uniform(-500, 500, 3)  # slow drift, imbalance
  raw = level + fluctuation * np.repeat(steadiness, 2)[:, None] + 15 * rng.standard_normal((rows, 3))
  half_range = (_MAX_CURRENT - _MIN_CURRENT) / 2
  current = _MID_CURRENT + half_range * np.tanh((raw - _MID_CURRENT) / half_range)  # stays in 6-14 kA
  return current.astype(np.float32), steadiness


# ----------------------------------------------------------------------------- video


def _smooth_texture(rng, size: int, cells: int) -> np.ndarray:
  """A (size, size) smooth, periodic random field in [0, 1]: bilinear upsampling of a coarse grid."""
  coarse = rng.uniform(0, 1, (cells, cells))
  pos = np.linspace(0, cells, size, endpoint=False)
  i, f = pos.astype(int), (pos - pos.astype(int))
  j = (i + 1) % cells  # wraps around, so tiled copies join without seams
  rows = coarse[i] * (1 - f)[:, None] + coarse[j] * f[:, None]
  return rows[:, i] * (1 - f) + rows[:, j] * f


def _shell(rng, size: int) -> np.ndarray:
  """Static furnace shell (size, size, 3) in 0..255: dark steel, rust, ribs and a weld seam."""
  grid = np.arange(size)
  rust = _smooth_texture(rng, size, 4)[..., None] * np.array([30.0, 12.0, 2.0])
  grain = _smooth_texture(rng, size, 16)[..., None] * 14.0
  ribs = (np.abs((grid + rng.integers(0, 16)) % 16 - 8) < 1)[None, :, None] * 12.0
  seam = (np.abs(grid - rng.integers(size // 3, 2 * size // 3)) < 1)[:, None, None] * 10.0
  return np.array([58.0, 52.0, 50.0]) + rust + grain + ribs + seam


# dark red -> red -> orange -> yellow -> white, indexed by heat in [0, 1]
_HEAT_STOPS = np.array([0.0, 0.2, 0.45, 0.7, 0.88, 1.0])
_HEAT_COLORS = np.array([[90, 10, 0], [150, 20, 5], [230, 45, 10], [255, 140, 25], [255, 225, 80],
                         [255, 255, 235]], np.float32)


def _heat_color(heat: np.ndarray) -> np.ndarray:
  return np.stack([np.interp(heat, _HEAT_STOPS, _HEAT_COLORS[:, c]) for c in range(3)], -1).astype(np.float32)


def _frame_state(cfg: SyntheticConfig, rng, plan: dict, times: np.ndarray) -> dict[str, np.ndarray]:
  """Per-frame scene parameters: hot spot geometry, glare, mist, light (vectorised over frames)."""
  n = len(times)
  spot = {k: np.zeros(n, np.float32) for k in ("row", "col", "radius", "heat", "masked")}
  for ev in plan["events"]:
    vis, end, radius = ev["visual_onset_s"], ev["end_s"], ev["radius"]
    on = (times >= vis) & (times < end)  # visible, hence labelled, from visual onset to the end
    progress = np.clip((times[on] - vis) / (0.6 * (end - vis)), 0, 1)
    fade = 0.6 + 0.4 * np.clip((end - times[on]) / max(cfg.cooling_s, 1e-6), 0, 1)  # cooling: -> 60 %
    start = min(cfg.spot_radius_start, radius)
    spot["row"][on], spot["col"][on] = ev["center"]
    spot["radius"][on] = (start + (radius - start) * progress ** 0.7) * fade
    spot["heat"][on] = (0.6 + 0.4 * progress) * fade
    spot["masked"][on] = 1
  glare = np.clip(_interval_profile(times, [g[:2] for g in plan["glare"]], ramp=2.0), 0, 1)
  glare *= 0.6 + 0.4 * np.abs(rng.standard_normal(n)).clip(0, 1)  # glare flickers hard
  glare_pos = np.zeros((n, 2), np.float32)
  for start, end in (g[:2] for g in plan["glare"]):
    on = (times >= start - 1) & (times <= end + 1)
    glare_pos[on] = rng.uniform([4, 8], [cfg.image_size * 0.5, cfg.image_size - 8])
  mist = np.clip(_interval_profile(times, [m[:2] for m in plan["mist"]], [m[2] for m in plan["mist"]]), 0, 0.995)
  light = 1 + cfg.flicker * np.clip(_smoothed(rng, n, max(1.0, cfg.fps), ()), -3, 3)
  return {**{f"spot_{k}": v for k, v in spot.items()}, "glare": glare.astype(np.float32),
          "glare_row": glare_pos[:, 0], "glare_col": glare_pos[:, 1], "mist": mist.astype(np.float32),
          "light": light.astype(np.float32)}


def _render(cfg, rng, shell, mist_texture, state: dict, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Frames (n, S, S, 3) uint8 and masks (n, S, S) uint8 for one chunk of frame states."""
  size, n = cfg.image_size, len(times)
  grid = np.arange(size, dtype=np.float32)
  col = lambda v: v[:, None, None]
  glow = (0.55 + 0.45 * np.exp(-grid / (size / 6)))[None, :, None, None] * col(state["light"])[..., None]
  image = shell[None] * glow
  mask = np.zeros((n, size, size), np.uint8)
  hot = np.flatnonzero(state["spot_heat"] > 0)  # the spot's maths only where there is a spot
  if hot.size:
    row, column = col(state["spot_row"][hot]), col(state["spot_col"][hot])
    d2 = (grid[None, :, None] - row) ** 2 + (grid[None, None, :] - column) ** 2
    radius = col(np.maximum(state["spot_radius"][hot], 1e-3))
    mask[hot] = (d2 <= radius ** 2) & (col(state["spot_masked"][hot]) > 0)
    heat = col(state["spot_heat"][hot]) * np.exp(-0.5 * d2 / (0.6 * radius) ** 2)
    alpha = np.clip(heat / 0.2, 0, 1)[..., None]
    image[hot] = image[hot] * (1 - alpha) + _heat_color(heat) * alpha
  lit = np.flatnonzero(state["glare"] > 0)
  if lit.size:
    d2 = ((grid[None, :, None] - col(state["glare_row"][lit])) / 1.6) ** 2 + (
        grid[None, None, :] - col(state["glare_col"][lit])) ** 2
    glare = (col(state["glare"][lit]) * np.exp(-0.5 * d2 / 36.0))[..., None]
    image[lit] = image[lit] * (1 - glare) + np.array([255.0, 240.0, 190.0], np.float32) * glare
  drift = (times * np.array([[0.7], [1.9]])).T.astype(int) % size  # mist drifts across the shell
  rows = (drift[:, :1, None] + np.arange(size)[None, :, None]) % (2 * size)
  cols = (drift[:, 1:, None] + np.arange(size)[None, None, :]) % (2 * size)
  # Mist is patchy (thinner and thicker patches drift across the shell) and swirls: its own brightness
  # varies with a second drifting patch pattern, so a heavy spray leaves no steady background to spot
  # a faint glow against.
  transmittance = (1 - col(state["mist"])) ** (0.8 + 0.4 * mist_texture[rows, cols])
  swirl = 0.8 + 0.4 * mist_texture[(rows + size // 2) % (2 * size), (cols + size // 3) % (2 * size)]
  mist_color = np.array([200.0, 205.0, 212.0], np.float32) * (0.85 + 0.15 * col(state["light"])[..., None])
  density = (1 - transmittance)[..., None]
  image = image * (1 - density) + mist_color * swirl[..., None] * density
  image += cfg.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(image, 0, 255).astype(np.uint8), mask


# ----------------------------------------------------------------------------- recordings


def _recording_name(index: int) -> str:
  return f"furnace_{index + 1:02d}"


def generate_recording(root: str, name: str, cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, Any]:
  """Simulates and writes one recording; returns its ground truth (events and split boundary)."""
  seconds, num_frames = int(cfg.duration_s), int(cfg.duration_s * cfg.fps)
  plan = _schedule(cfg, rng)
  current, steadiness = _simulate_current(cfg, rng, plan, seconds)
  frame_seconds = np.floor(np.arange(num_frames) / cfg.fps).astype(np.int64)
  current_seconds = np.repeat(np.arange(seconds, dtype=np.int64), fmf_format.ROWS_PER_SECOND)
  shell = _shell(rng, cfg.image_size)
  mist_texture = np.tile(_smooth_texture(rng, cfg.image_size, 5), (2, 2)).astype(np.float32)
  times = np.arange(num_frames) / cfg.fps
  state = _frame_state(cfg, rng, plan, times)
  labels = np.zeros(num_frames, np.uint8)
  with fmf_format.VideoWriter(fmf_format.video_path(root, name), num_frames, cfg.image_size,
                              cfg.image_size, frame_labels=cfg.class_level) as writer:
    for start in range(0, num_frames, _CHUNK):
      chunk = slice(start, start + _CHUNK)
      frames, masks = _render(cfg, rng, shell, mist_texture, {k: v[chunk] for k, v in state.items()}, times[chunk])
      labels[chunk] = masks.reshape(len(masks), -1).max(axis=1)
      writer.write(start, frames, labels[chunk] if cfg.class_level else masks)
  fmf_format.write_signals(root, name, np.datetime64(cfg.start_time, "s"), frame_seconds, current, current_seconds)
  test_start = int(round(num_frames * (1 - cfg.test_fraction)))
  for ev in plan["events"]:
    ev["split"] = "test" if ev["visual_onset_s"] * cfg.fps >= test_start else "train"
  os.makedirs(os.path.dirname(fmf_format.events_path(root, name)), exist_ok=True)
  with open(fmf_format.events_path(root, name), "w") as f:
    json.dump(plan["events"], f, indent=1)
  os.makedirs(os.path.dirname(fmf_format.truth_path(root, name)), exist_ok=True)
  np.savez(fmf_format.truth_path(root, name), mist=state["mist"], glare=state["glare"],
           spot_radius=state["spot_radius"] * state["spot_masked"], steadiness=steadiness.astype(np.float32))
  return {"name": name, "frames": num_frames, "test_start": test_start, "events": plan["events"],
          "abnormal_share": float(labels.mean())}


def generate(root: str, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = False) -> list[dict[str, Any]]:
  """Writes a whole synthetic FMF root (videos, currents, timestamps, splits, events, truth)."""
  cfg.validate()
  os.makedirs(root, exist_ok=True)
  seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.recordings)
  names = [_recording_name(i) for i in range(cfg.recordings)]
  if progress:
    names = console.bar(names, phase="generating data", unit="recording")
  results = [generate_recording(root, name, cfg, np.random.default_rng(seed)) for name, seed in zip(names, seeds)]
  splits = {
      "train": {r["name"]: np.arange(r["test_start"]) for r in results},
      "test": {r["name"]: np.arange(r["test_start"], r["frames"]) for r in results},
  }
  fmf_format.write_splits(root, splits)
  with open(os.path.join(root, "synthetic.json"), "w") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=1)
  return results


def default_root(cfg: SyntheticConfig, data_dir: str) -> str:
  """Where the synthetic root for these knobs lives: <data_dir>/synthetic/<hash of knobs and version>."""
  knobs = dict(dataclasses.asdict(cfg), generator_version=GENERATOR_VERSION)
  if not knobs["class_level"]:
    del knobs["class_level"]  # added later: pixel-level roots keep the names they were cached under
  digest = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:10]
  return os.path.join(data_dir, "synthetic", f"fmf_{digest}")


def write_root(root: str, cfg: SyntheticConfig, progress: bool = False) -> list[dict[str, Any]]:
  """`generate` into `<root>.partial`, renamed to `root` (missing or empty) once complete; what a killed
  run left is removed first, and a failure (no space left) is a `DataError` that keeps nothing."""
  with staging.staged(root, f"generating the synthetic furnace into {root}") as partial:
    return generate(partial, cfg, progress=progress)


def ensure(cfg: SyntheticConfig, data_dir: str, progress: bool = False) -> str:
  """The synthetic root for `cfg`, generated on first use (atomically, one process at a time: a
  half-written root is never used, and one a killed run left is remade)."""
  root = default_root(cfg, data_dir)
  if os.path.isfile(os.path.join(root, "synthetic.json")):
    return root
  paths.ensure_writable_dir(os.path.dirname(root), "data dir")
  with locks.exclusive(f"{root}.lock", waiting=f"generating the synthetic furnace into {root}"):
    if not os.path.isfile(os.path.join(root, "synthetic.json")):
      frames = int(cfg.recordings * cfg.duration_s * cfg.fps)
      took = console.estimate(frames, cfg.image_size, cfg.image_size, console.GENERATE_FRAMES_PER_S)
      console.say(f"generating the synthetic furnace ({cfg.recordings} recordings of {cfg.duration_s:g} s at "
                  f"{cfg.fps:g} fps, {cfg.image_size}x{cfg.image_size}; {frames} frames) into {root}; "
                  f"first use only, about {took} on 2 CPU cores")
      shutil.rmtree(root, ignore_errors=True)  # a root without synthetic.json is not one
      for old in glob.glob(f"{glob.escape(root)}.partial-*"):  # earlier versions' leftovers (per-pid names)
        staging.remove_leftover(old, "a run")
      write_root(root, cfg, progress=progress)
  return root
