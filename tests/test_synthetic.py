"""The synthetic furnace has the promised physics, ground truth, ambiguities and determinism."""

import dataclasses
import hashlib
import os

import numpy as np
import pytest

from fmjax.data import fmf_format, ground_truth, synthetic


def rolling_std(current: np.ndarray, seconds: int = 30) -> np.ndarray:
  """Per-second std of the current over the trailing `seconds` (mean over phases)."""
  per_second = current.reshape(-1, 2 * 3)
  windows = np.lib.stride_tricks.sliding_window_view(per_second, seconds, axis=0)  # (S-seconds+1, 6, seconds)
  return np.concatenate([np.full(seconds - 1, np.nan), windows.std(axis=-1).mean(axis=-1)])


@pytest.fixture(scope="module")
def recs(tiny_root):
  return [(fmf_format.load_recording(tiny_root, n), ground_truth.load_events(tiny_root, n),
           np.load(fmf_format.truth_path(tiny_root, n))) for n in fmf_format.list_recordings(tiny_root)]


def test_current_is_three_phase_in_range(recs):
  for rec, _, _ in recs:
    assert rec.current.shape[1] == 3 and len(rec.current) == 2 * 1200
    assert rec.current.min() >= 6000 and rec.current.max() <= 14000


def test_current_is_steady_in_anomalies_and_fluctuates_when_normal(recs):
  abnormal, normal, normal_or_distractor = [], [], []
  for rec, events, truth in recs:
    sd = rolling_std(rec.current)
    t = np.arange(len(sd))
    inside = np.zeros(len(sd), bool)
    near = np.isnan(sd)
    for e in events:
      inside |= (t >= e["current_onset_s"] + 30) & (t < e["end_s"])
      near |= (t >= e["current_onset_s"] - 60) & (t < e["end_s"] + 60)
    abnormal.append(sd[inside])
    normal_or_distractor.append(sd[~near])
    normal.append(sd[~near & (truth["steadiness"] == 1)])  # without the designed steady distractors
  steady = np.median(np.concatenate(abnormal))
  ratio = steady / np.median(np.concatenate(normal))
  assert ratio < 0.35, f"anomalous current should be much steadier than normal smelting (std ratio {ratio:.2f})"
  assert steady / np.median(np.concatenate(normal_or_distractor)) < 0.5


def test_events_ground_truth(recs, tiny_config):
  for rec, events, _ in recs:
    assert events, "every tiny recording holds at least one event"
    for e in events:
      assert tiny_config.lead_min_s <= e["lead_s"] <= tiny_config.lead_max_s
      assert e["visual_onset_s"] - e["current_onset_s"] == pytest.approx(e["lead_s"], abs=0.02)
      assert e["current_onset_s"] < e["visual_onset_s"] < e["end_s"] <= tiny_config.duration_s
      assert {"center", "radius", "split"} <= set(e)


def test_masks_cover_the_hot_spot_and_only_while_visible(recs, tiny_config):
  for rec, events, truth in recs:
    t = rec.frame_seconds
    visible = np.zeros(len(t), bool)
    for e in events:
      visible |= (t >= e["visual_onset_s"]) & (t < e["end_s"])
      # before the cooling at the event's end the spot is full-grown
      k = int(np.flatnonzero(t < e["end_s"] - tiny_config.cooling_s - 5)[-1])
      r, c = (int(round(v)) for v in e["center"])
      assert rec.masks[k, r, c] == 1
      area = rec.masks[k].sum()
      assert 0.6 * np.pi * e["radius"] ** 2 < area < 1.4 * np.pi * e["radius"] ** 2
      if e["end_s"] < tiny_config.duration_s:  # cooled to ~60 % of the radius (~36 % of the area) at the end
        last = int(np.flatnonzero(t < e["end_s"])[-1])
        assert 0.2 * area < rec.masks[last].sum() < 0.6 * area
      first = int(np.flatnonzero(t >= e["visual_onset_s"])[0])  # it shows at spot_radius_start, not as a dot
      assert 0.6 * np.pi * tiny_config.spot_radius_start ** 2 < rec.masks[first].sum()
    np.testing.assert_array_equal(rec.labels, visible.astype(np.int32))
    clear = rec.labels.astype(bool) & (truth["mist"] < 0.1)
    inside = (rec.frames[clear, ..., 0] * rec.masks[clear]).sum() / rec.masks[clear].sum()
    outside = (rec.frames[clear, ..., 0] * (1 - rec.masks[clear])).sum() / (1 - rec.masks[clear]).sum()
    assert inside > outside + 60, "the masked spot is hot (red/yellow/white) where no mist hides it"


def test_heavy_mist_hides_the_spot_and_glare_is_unlabelled(recs):
  heavy_contrast, glare_peaks = [], []
  for rec, events, truth in recs:
    heavy = rec.labels.astype(bool) & (truth["mist"] > 0.75)
    for k in np.flatnonzero(heavy):
      m = rec.masks[k].astype(bool)
      heavy_contrast.append(rec.frames[k, m, 0].mean() - rec.frames[k, ~m, 0].mean())
    glare = truth["glare"] > 0.6
    t = rec.frame_seconds
    in_event = np.any([(t >= e["visual_onset_s"]) & (t < e["end_s"]) for e in events], axis=0)
    assert (glare & ~in_event).any() and not rec.labels[glare & ~in_event].any()  # glare alone is unlabelled
    glare_peaks += list(rec.frames[glare].max(axis=(1, 2, 3)))
  assert heavy_contrast and np.mean(heavy_contrast) < 10  # a hot spot outshines the shell by > 60 when clear
  assert glare_peaks and np.median(glare_peaks) > 200


def test_steady_current_without_visible_anomaly_exists(tiny_root, tiny_config, tmp_path):
  cfg = dataclasses.replace(tiny_config, recordings=1, steady_distractor_rate=1.0, seed=11)
  root = str(tmp_path / "distract")
  synthetic.generate(root, cfg)
  rec = fmf_format.load_recording(root, "furnace_01")
  truth = np.load(fmf_format.truth_path(root, "furnace_01"))
  events = ground_truth.load_events(root, "furnace_01")
  t = np.arange(len(truth["steadiness"]))
  in_event = np.zeros(len(t), bool)
  for e in events:
    in_event |= (t >= e["current_onset_s"] - 20) & (t < e["end_s"] + 20)
  distractor = (truth["steadiness"] < 0.5) & ~in_event
  assert distractor.sum() >= 60
  assert not rec.labels[np.isin(rec.frame_seconds, t[distractor])].any()


@pytest.mark.parametrize("ratio", [0.4, 0.5])
def test_label_share_tracks_abnormal_ratio(tmp_path, ratio):
  cfg = synthetic.SyntheticConfig(recordings=4, duration_s=3600, fps=0.2, image_size=16, spot_radius_min=3,
                                  spot_radius_max=5, abnormal_ratio=ratio, seed=5)
  results = synthetic.generate(str(tmp_path / "ratio"), cfg)
  share = np.mean([r["abnormal_share"] for r in results])
  assert ratio - 0.08 <= share <= ratio + 0.08, share


def _digest(root):
  h = hashlib.sha1()
  for sub in ("currents", "timestamps", "events", "videos"):
    for name in sorted(os.listdir(os.path.join(root, sub))):
      path = os.path.join(root, sub, name)
      if name.endswith(".mat"):
        import h5py
        with h5py.File(path, "r") as f:
          h.update(f["data"][:].tobytes() + f["label"][:].tobytes())
      else:
        h.update(open(path, "rb").read())
  return h.hexdigest()


def test_same_seed_same_data_other_seed_other_data(tmp_path):
  cfg = synthetic.SyntheticConfig(recordings=1, duration_s=700, fps=0.5, image_size=16, lead_min_s=60,
                                  lead_max_s=90, spot_radius_min=3, spot_radius_max=5, seed=1)
  roots = [str(tmp_path / n) for n in ("a", "b", "c")]
  for root, seed in zip(roots, (1, 1, 2)):
    synthetic.generate(root, dataclasses.replace(cfg, seed=seed))
  assert _digest(roots[0]) == _digest(roots[1]) != _digest(roots[2])


def test_bad_knobs_are_named():
  with pytest.raises(ValueError, match="lead_min_s <= lead_max_s"):
    synthetic.SyntheticConfig(lead_min_s=300, lead_max_s=200).validate()
  with pytest.raises(ValueError, match="duration_s=100 is too short"):
    synthetic.SyntheticConfig(duration_s=100).validate()
  with pytest.raises(ValueError, match="spot_radius_max=14 is too large for image_size=16"):
    synthetic.SyntheticConfig(image_size=16).validate()  # generate() would fail deep in the schedule


def test_ensure_generates_once_into_the_data_dir(tmp_path):
  cfg = synthetic.SyntheticConfig(recordings=1, duration_s=700, fps=0.25, image_size=16, lead_min_s=60,
                                  lead_max_s=90, spot_radius_min=3, spot_radius_max=5)
  root = synthetic.ensure(cfg, str(tmp_path))
  stamp = os.stat(os.path.join(root, "synthetic.json")).st_mtime_ns
  assert synthetic.ensure(cfg, str(tmp_path)) == root
  assert os.stat(os.path.join(root, "synthetic.json")).st_mtime_ns == stamp
  assert synthetic.ensure(dataclasses.replace(cfg, seed=9), str(tmp_path)) != root
  assert not [d for d in os.listdir(os.path.join(str(tmp_path), "synthetic")) if "partial" in d]
