"""The align job: the hand-crafted baseline and lead metrics on toy inputs, onset oversampling, the
config's layout, and a tiny end-to-end run with its promised summary."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from fmjax.analysis import unsteadiness
from fmjax.data import onsets
from fmjax.evals import lead_time
from fmjax.models import align as align_model
from fmjax.runtime import errors, registry
from fmjax.runtime.parallel import AXIS
from fmjax.train.tasks import align as align_task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import align

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)

SUMMARY_KEYS = ("lead_mae_s", "lead_within_10s", "lead_median_est_s", "lead_median_true_s", "baseline_lead_mae_s",
                "events")


def test_baseline_finds_the_lag_of_a_toy_pair():
  window, max_lag, lead = 10, 12, 7
  rng = np.random.default_rng(0)
  total = window + max_lag
  onset = total - window // 2                        # the video turns hot half-way through its window
  video = np.zeros((1, window, 1, 4, 4, 3), np.uint8)
  video[0, window // 2:, ..., 0] = 200               # red: hot
  # The current is noisy (fluctuating) until `lead` steps before the visual onset, then steady.
  current = 10000 + rng.normal(0, 800, (1, total, 4, 3))
  current[0, onset - lead:] = 10000 + rng.normal(0, 20, (total - onset + lead, 4, 3))
  leads = unsteadiness.baseline_leads(video, current, window, max_lag, step_seconds=2.0, smooth_steps=1)
  assert leads.tolist() == [lead * 2.0]


@pytest.mark.parametrize("temporal", align_model.TEMPORAL)
def test_window_encoders_give_unit_embeddings(temporal):
  model = align_model.Aligner(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4, video_temporal=temporal,
                              current_temporal=temporal)
  rng = np.random.default_rng(3)
  video = rng.integers(0, 255, (2, 5, 1, 8, 8, 3)).astype(np.uint8)
  current = rng.normal(10000, 1500, (2, 3, 5, 4, 3)).astype(np.float32)   # 3 candidate lags per sample
  variables = model.init(jax.random.key(0), video=video, current=current)
  v, c, temperature = model.apply(variables, video=video, current=current)
  width = 5 * 4 if temporal == "steps" else 8
  assert v.shape == (2, width) and c.shape == (2, 3, width) and 0.01 <= float(temperature) <= 1
  np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(c, axis=-1), 1, rtol=1e-5)


@pytest.mark.parametrize("temporal", align_model.TEMPORAL)
def test_averaged_frames_are_one_frame_of_their_mean(temporal):
  """video_frames='mean' (configs/align.py:meanframes): a step of F frames embeds as the one-frame step of
  their mean would, with the same weights; stacking them instead gives a first layer of F * 3 channels."""
  kw = dict(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4, video_temporal=temporal, current_temporal=temporal)
  rng = np.random.default_rng(5)
  video = rng.integers(0, 255, (2, 5, 4, 8, 8, 3)).astype(np.uint8)
  current = rng.normal(10000, 1500, (2, 5, 4, 3)).astype(np.float32)
  averaged, one_frame = align_model.Aligner(video_frames="mean", **kw), align_model.Aligner(**kw)
  variables = averaged.init(jax.random.key(0), video=video, current=current)
  mean = video.astype(np.float32).mean(axis=2, keepdims=True)  # VideoStep scales floats as it scales uint8
  np.testing.assert_allclose(averaged.apply(variables, "video", video, method="embed"),
                             one_frame.apply(variables, "video", mean, method="embed"), rtol=1e-4, atol=1e-5)
  stacked = one_frame.init(jax.random.key(0), video=video, current=current)
  kernels = [x.shape for x in jax.tree.leaves(stacked) if x.ndim == 4]
  assert kernels[0][2] == 12 and [x.shape[2] for x in jax.tree.leaves(variables) if x.ndim == 4][0] == 3
  with pytest.raises(errors.ConfigError, match="frames='max'"):
    align_model.Aligner(video_frames="max", **kw).init(jax.random.key(0), video=video, current=current)


def test_unknown_temporal_encoder_and_a_missing_input_are_errors():
  with pytest.raises(ValueError, match="temporal='lstm'"):
    align_model.WindowEncoder("video", "lstm").init(jax.random.key(0), np.zeros((1, 2, 1, 8, 8, 3), np.uint8))
  model = registry.find("align", "Model")(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4)
  with pytest.raises(errors.ConfigError, match="needs video= and current=; missing: current"):
    model.init(jax.random.key(0), video=np.zeros((1, 2, 1, 8, 8, 3), np.uint8))


def test_oversampling_by_hand():
  samples = np.stack([np.zeros(10, int), np.arange(10)], 1)
  chosen = np.arange(10) >= 8                          # 2 of 10: repeated 4 times to make half of 16
  out = onsets.oversample(samples, chosen, 0.5)
  assert len(out) == 16 and np.sum(out[:, 1] >= 8) == 8
  assert onsets.oversample(samples, chosen, 0.0) is samples
  np.testing.assert_array_equal(onsets.oversample(samples, chosen, 1.0), samples[8:])
  assert onsets.oversample(samples, np.zeros(10, bool), 0.5) is samples


def test_config_holds_weights_in_loss_and_the_contrast_apart():
  config = align.get_config("lag0,tiny")
  assert dict(config.loss) == {"mil_nce": 1.0, "supervised": 1.0}
  assert config.contrast.lag0 and tuple(config.contrast.hard_negative_lags) == (40,)
  assert config.model_name == "align" and config.evals.lead_time.type == "lead_time"
  assert config.evals.lead_time.batch_size == 8 and config.input.batch_size == 8 and config.num_train_steps == 6


def test_lead_metrics_by_hand():
  m = lead_time.lead_metrics(np.array([100.0, 130.0, np.nan]), np.array([104.0, 110.0, 90.0]))
  assert m["lead_mae_s"] == pytest.approx(12.0)        # (4 + 20) / 2: the event without an estimate is left out
  assert m["lead_within_10s"] == pytest.approx(1 / 3)  # ... and counts as a miss
  assert m["lead_median_est_s"] == pytest.approx(115.0)


@pytest.fixture(scope="module")
def tiny_run(align_run):
  return align_run


def test_tiny_run_writes_the_promised_summary_and_report(tiny_run):
  config, workdir, summary = tiny_run
  with open(os.path.join(workdir, "summary.json")) as f:
    written = json.load(f)
  assert set(SUMMARY_KEYS) <= set(written)
  assert written["events"] >= 1 and written["steps"] == config.num_train_steps
  assert 0 <= written["lead_median_est_s"] <= config.input.max_lag_steps * config.input.step_seconds
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Mean similarity vs lag" in report and "true vs estimated lead" in report
  # the search ran under a prior from the train split's onsets, and the plain argmax is reported too
  assert written["prior_windows"] >= 1 and "Prior over lags" in report and "argmax_lead_mae_s" in written
  # one row per event, whose errors make the summary's MAE and whose estimates its median
  table = report.split("## The test split's events (leads in seconds)")[1].split("##")[0].strip().splitlines()[2:]
  rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
  assert len(rows) == written["events"] and all(row[0].startswith("furnace_") for row in rows)
  true, estimate, error = (np.array([float(row[i]) for row in rows]) for i in (2, 3, 4))
  np.testing.assert_allclose(estimate - true, error, atol=0.05)
  assert np.nanmean(np.abs(error)) == pytest.approx(written["lead_mae_s"], abs=0.05)
  assert np.nanmedian(estimate) == pytest.approx(written["lead_median_est_s"], abs=0.05)


@pytest.fixture(scope="module")
def tiny_task(tiny_run):
  return align_task.Task.prepare(tiny_run[0])


def test_training_windows_oversample_visual_onsets(tiny_task):
  task, config = tiny_task, tiny_task.config
  samples = onsets.training_samples(task.data.recordings, task.data.split("train"), task.inputs["spec"],
                                    config.input.onset_share)
  span = config.input.window_steps * config.input.step_seconds
  with_onset = []
  for r, i in samples:
    rec = task.data.recordings[r]
    second = rec.frame_seconds[i]
    inside = (rec.frame_seconds > second - span) & (rec.frame_seconds <= second)
    labels = rec.labels[inside]
    starts_inside = bool(np.any(np.diff(labels.astype(int)) == 1))
    starts_at_first = labels[0] == 1 and i > 0 and rec.labels[np.flatnonzero(inside)[0] - 1] == 0
    with_onset.append(starts_inside or starts_at_first)
  assert abs(np.mean(with_onset) - config.input.onset_share) < 0.1


def test_label_onsets_are_the_events_visual_onsets(tiny_task):
  task = tiny_task
  found = onsets.label_onsets(task.data.recordings, task.data.split("train"))
  assert found and all(np.isnan(lead) for _, _, lead in found)
  for r, rec in enumerate(task.data.recordings):
    first_test = rec.frame_seconds[task.data.split("test")[task.data.split("test")[:, 0] == r, 1].min()]
    # events/*.json: every visual onset after the first frame and before the test split starts
    truth = [ev["visual_onset_s"] for ev in task.data.events(r) if 0 < ev["visual_onset_s"] < first_test]
    seconds = [second for rr, second, _ in found if rr == r]
    np.testing.assert_allclose(seconds, truth, atol=1.0)  # a frame's second is whole


def _loss(task, variables: dict, batch: dict) -> tuple[float, dict]:
  """The loss and its metrics on one device (the loss's collectives need the data axis bound)."""
  one_device = jax.tree.map(lambda x: x[None], batch)
  loss = jax.vmap(lambda b: task.loss(variables["params"], {}, None, b, jax.random.key(1)), axis_name=AXIS)
  total, (metrics, model_state, aux) = loss(one_device)
  assert model_state == {} and aux is None
  return float(total[0]), {k: float(v[0]) for k, v in metrics.items()}


def test_factorised_training_loss_equals_embedding_every_window(tiny_task):
  task = tiny_task
  batch = next(task.train_batches(8, 0, 0))
  variables = task.init(jax.random.key(0))
  factorised, metrics = _loss(task, variables, batch)
  assert set(metrics) == {"loss", "mil_nce", "supervised", "temperature", "positive_cos"}
  assert factorised == pytest.approx(metrics["mil_nce"] + metrics["supervised"], rel=1e-6)  # weights 1 and 1
  whole = align_task.Task(task.config, task.data)
  whole.pool_steps = None  # every window through the whole encoder
  assert factorised == pytest.approx(_loss(whole, variables, batch)[0], rel=1e-5)


def test_lag0_variant_trains_on_lag_0_only(tiny_task):
  task = align_task.Task(align.get_config("lag0,tiny"), tiny_task.data)
  np.testing.assert_array_equal(task.train_lags, [0])
  batch = next(task.train_batches(8, 0, 0))
  total, metrics = _loss(task, task.init(jax.random.key(0)), batch)
  assert np.isfinite(total) and "mil_nce" in metrics


def test_centred_dense_is_dense_with_an_untrained_bias():
  """Same parameters and numbers as nn.Dense; the bias (cancelled by the window centring) gets a zero
  gradient, not rounding noise that Adam would amplify differently on each device layout."""
  from flax import linen as nn
  x = jax.random.normal(jax.random.key(0), (3, 5, 7))
  dense, centred = nn.Dense(4), align_model.CentredDense(4)
  variables = jax.tree.map(lambda v: v + 0.3, dense.init(jax.random.key(1), x))
  assert jax.tree.structure(centred.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  np.testing.assert_array_equal(centred.apply(variables, x), dense.apply(variables, x))
  grads = jax.grad(lambda v: align_model.unit_per_step(centred.apply(v, x)).sum())(variables)
  assert not np.any(np.asarray(grads["params"]["bias"])) and np.any(np.asarray(grads["params"]["kernel"]))
