"""Contrastive alignment as a training task, and the lead-time evaluation on the furnace's events.

Training: a video window of W steps ending at a frame, and the current of the H + W steps before it
(`pipeline.step_sequence` with `history_steps=H`). The current windows ending 0, s, 2s, .. H steps
earlier are the video window's bag of positives (MIL-NCE; `lag0` keeps lag 0 only), every other
sample's windows its negatives. Half the windows (`input.onset_share`) contain a visual onset by the
video labels: those are the windows whose lag can be told.

Evaluation: for each event of the split (`events/<name>.json`), the video window that has the visual
onset at `eval.onset_at` of its length and the current history before it go through
`fmjax.leadtime.search` (every lag, one vmap); the estimate is compared with the event's true lead.
With `eval.prior.split` the estimate is the posterior's argmax under a prior over lags that the
plain searches of that split's visual onsets give (found in the video labels, so no ground truth is
used): the furnace's typical lead tells an anomaly's onset from an older steady stretch that looks
the same. The plain argmax is reported beside it (`argmax_*`). A hand-crafted baseline
(cross-correlation of current steadiness with video hotness) runs on the same windows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fmjax import errors, leadtime, losses
from fmjax.data import pipeline, tfds_fmf
from fmjax.models import align
from fmjax.train.parallel import AXIS


class AlignTask:
  """Everything job-specific about the aligner."""
  curve_keys = ("loss", "mil_nce", "temperature", "positive_cos", "lr")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf | None = None):
    self.config = config
    self.data = data or tfds_fmf.load_from_config(config.data)
    i, loss = config.input, config.loss
    self.window_steps, self.max_lag = i.window_steps, i.max_lag_steps
    self.history_steps = max([self.max_lag, *loss.hard_negative_lags])
    self.window = dict(num_steps=i.window_steps, step_seconds=i.step_seconds, frames_per_step=i.frames_per_step,
                       downsample_factor=i.downsample, history_steps=self.history_steps)
    self.train_lags = np.array([0]) if loss.lag0 else np.arange(0, self.max_lag + 1, i.lag_stride)
    self.model = align.Aligner(**config.model)
    self.embed_fn = align.embed_fn(self.model)  # one object, so the jitted search compiles once
    # 'steps' encoders factorise: the search computes the current's per-step features once per history.
    self.pool_steps = align.unit_per_step if config.model.current_temporal == "steps" else None

  # ------------------------------------------------------------------------------ batches

  def training_samples(self) -> np.ndarray:
    """(n, 2) training window ends: every valid end, plus the onset-containing ones repeated so that
    they make up about `input.onset_share` of the samples."""
    samples = pipeline.split_samples(self.data.recordings, self.data.split("train"), "sequence", **self.window)
    onset = np.zeros(len(samples), bool)
    span = self.window_steps * self.config.input.step_seconds
    rises = self.label_onsets("train")
    for r, rec in enumerate(self.data.recordings):
      mine = samples[:, 0] == r
      ends = rec.frame_seconds[samples[mine, 1]]
      rise_seconds = np.sort([second for owner, second, _ in rises if owner == r])
      # a rise inside (end - span, end]
      onset[mine] = np.searchsorted(rise_seconds, ends, side="right") > np.searchsorted(rise_seconds, ends - span,
                                                                                          side="right")
    share = self.config.input.onset_share
    if share <= 0 or not onset.any():
      return samples
    if share >= 1:
      return samples[onset]
    repeat = max(1, int(round(share * (~onset).sum() / ((1 - share) * onset.sum()))))
    return np.concatenate([samples[~onset], np.repeat(samples[onset], repeat, axis=0)])

  @staticmethod
  def _fields(batch: dict) -> dict:
    """video, the whole current (history then window: (B, H + W, R, 3)), and the window's labels."""
    current = np.concatenate([batch["current_history"], batch["current"]], axis=1)
    return {"video": batch["video"], "current": current, "labels": batch["labels"]}

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    dataset = pipeline.make_dataset(self.data.recordings, self.training_samples(), kind="sequence",
                                    batch_size=host_batch, window=self.window, seed=seed, start_batch=start_step,
                                    worker_count=self.config.input.worker_count)
    return map(self._fields, dataset)

  # ------------------------------------------------------------------------------ model

  def _windows(self, current: jax.Array, lags) -> jax.Array:
    """(B, len(lags), W, ...) windows of a (B, T, ...) current (or its per-step features) ending `lags`
    steps before the video window's end."""
    return jax.vmap(lambda history: leadtime.windows_at(history, jnp.asarray(lags), self.window_steps))(current)

  def init(self, rng: jax.Array, batch: dict) -> dict:
    return self.model.init(rng, batch["video"], self._windows(batch["current"], self.train_lags[:1]))

  def _current_embeddings(self, params, current: jax.Array, lags) -> jax.Array:
    """(B, len(lags), e) embeddings of the current windows at `lags`; with 'steps' encoders the per-step
    features are computed once per history and each window pools its own (as the search does)."""
    embed = functools.partial(self.model.apply, {"params": params}, method=align.Aligner.embed)
    if self.pool_steps is not None:
      windows = self._windows(embed("current_steps", current), lags)           # (B, P, W, k)
      return self.pool_steps(windows.reshape(-1, *windows.shape[2:])).reshape(*windows.shape[:2], -1)
    windows = self._windows(current, lags)                                      # (B, P, W, R, 3)
    return embed("current", windows.reshape(-1, *windows.shape[2:])).reshape(*windows.shape[:2], -1)

  def loss(self, params, model_state: dict, batch: dict, rng: jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
    del rng
    w = self.config.loss
    video = self.model.apply({"params": params}, "video", batch["video"], method=align.Aligner.embed)
    temperature = self.model.apply({"params": params}, method=align.Aligner.temperature)
    current = self._current_embeddings(params, batch["current"], self.train_lags)
    hard = self._current_embeddings(params, batch["current"], w.hard_negative_lags) if w.hard_negative_lags else None
    mil = losses.mil_nce(video, current, temperature, hard, axis_name=AXIS)
    metrics = {"mil_nce": mil, "temperature": temperature,
               "positive_cos": jnp.max(jnp.einsum("bd,bpd->bp", video, current), -1).mean()}
    total = w.mil_nce * mil
    if w.supervised > 0:
      metrics["supervised"] = losses.supervised_contrastive(video, batch["labels"][:, -1], temperature, AXIS)
      total += w.supervised * metrics["supervised"]
    metrics["loss"] = total
    return total, (metrics, model_state)

  # ------------------------------------------------------------------------------ evaluation

  def _onset_windows(self, onsets: list[tuple[int, float, float]]) -> dict[str, np.ndarray]:
    """Per (recording, visual onset second, true lead or NaN): the video window with that onset at
    `eval.onset_at` of its length, the current history before it, the video labels and the lead;
    onsets too early in their recording for a full history are counted as skipped. Empty: `skipped` only."""
    e, step_s = self.config.eval, self.config.input.step_seconds
    windows, skipped = [], 0
    for r, onset_second, lead in onsets:
      rec = self.data.recordings[r]
      end_second = onset_second + (1 - e.onset_at) * self.window_steps * step_s
      frame = int(np.searchsorted(rec.frame_seconds, end_second, side="right")) - 1
      try:
        sample = pipeline.step_sequence(rec, frame, **self.window)
      except ValueError:
        skipped += 1
        continue
      windows.append({**self._fields({k: v[None] for k, v in sample.items() if k != "end_second"}),
                      "lead_s": np.array([lead]), "recording": np.array([r])})
    out = {k: np.concatenate([w[k] for w in windows]) for k in windows[0]} if windows else {}
    out["skipped"] = skipped
    return out

  def event_windows(self, split: str) -> dict[str, np.ndarray]:
    """The windows of the split's ground-truth events (`events/<name>.json`), with their true leads."""
    onsets = [(r, event["visual_onset_s"], event["lead_s"]) for r in range(len(self.data.recordings))
              for event in self.data.events(r) or [] if event.get("split") == split]
    windows = self._onset_windows(onsets)
    if "lead_s" not in windows:
      raise errors.ConfigError(f"no event of the {split!r} split has a full window and {self.history_steps} "
                               f"steps of current before it ({windows['skipped']} skipped); the data has no "
                               f"ground-truth events?")
    return windows

  def label_onsets(self, split: str) -> list[tuple[int, float, float]]:
    """(recording, second, NaN) of every visual onset of the split seen in the video labels (a normal
    frame followed by an abnormal one): no ground truth needed, so the real benchmark has them too."""
    frames = self.data.split(split)
    onsets = []
    for r, rec in enumerate(self.data.recordings):
      mine = np.sort(frames[frames[:, 0] == r, 1])
      rises = mine[1:][(rec.labels[mine[1:]] > 0) & (rec.labels[mine[:-1]] == 0) & (np.diff(mine) == 1)]
      onsets += [(r, float(rec.frame_seconds[f]), np.nan) for f in rises]
    return onsets

  def search_windows(self, variables: dict, windows: dict, log_prior: jax.Array | None = None) -> dict[str, np.ndarray]:
    """`leadtime.search` over `windows` in batches of `eval.batch_size`; numpy lead_s, confidence, similarity."""
    e = self.config.eval
    temperature = float(self.model.apply(variables, method=align.Aligner.temperature))
    parts = []
    for lo in range(0, len(windows["lead_s"]), e.batch_size):
      sl = slice(lo, lo + e.batch_size)
      parts.append(leadtime.search(self.embed_fn, variables, jnp.asarray(windows["video"][sl]),
                                   jnp.asarray(windows["current"][sl]), window=self.window_steps,
                                   max_lag=self.max_lag, step_seconds=self.config.input.step_seconds,
                                   chunk=e.chunk, abnormal=windows["labels"][sl].any(-1), pool_steps=self.pool_steps,
                                   log_prior=log_prior, temperature=temperature))
    return {k: np.concatenate([np.asarray(getattr(p, k)) for p in parts]) for k in ("lead_s", "confidence",
                                                                                     "similarity")}

  def lead_prior(self, variables: dict) -> tuple[jax.Array | None, dict[str, float]]:
    """The log prior over lags from the plain searches of the `eval.prior.split` onsets (by labels);
    None where that split has no onset with a full history (the search is then plain)."""
    p, step_s = self.config.eval.prior, self.config.input.step_seconds
    onsets = self._onset_windows(self.label_onsets(p.split))
    if "lead_s" not in onsets:
      return None, {"prior_windows": 0}
    leads = jnp.asarray(self.search_windows(variables, onsets)["lead_s"] / step_s)
    bandwidth = p.bandwidth_steps or float(leadtime.silverman_bandwidth(leads))
    log_prior = leadtime.lag_prior(leads, self.max_lag, bandwidth=bandwidth, floor=p.floor)
    return log_prior, {"prior_windows": int(jnp.isfinite(leads).sum()), "prior_bandwidth_s": bandwidth * step_s,
                       "prior_peak_s": float(jnp.argmax(log_prior) * step_s)}

  def evaluate(self, par, state) -> tuple[dict[str, Any], dict]:
    e, step_s = self.config.eval, self.config.input.step_seconds
    events = self.event_windows(e.split)
    variables = jax.device_get(par.get_state(state).variables())
    summary, log_prior = {}, None
    if e.prior.split:
      log_prior, summary = self.lead_prior(variables)
    estimate = self.search_windows(variables, events, log_prior)
    plain = leadtime.leads_from_curves(jnp.asarray(estimate["similarity"]), events["labels"].any(-1),
                                       step_seconds=step_s)  # the same curves, by similarity alone
    baseline = baseline_leads(events["video"], events["current"], self.window_steps, self.max_lag, step_s,
                              e.baseline_smooth_steps)
    true = events["lead_s"]
    summary.update({**lead_metrics(estimate["lead_s"], true), "events": int(len(true)),
                    "events_skipped": int(events["skipped"]), "lead_median_true_s": float(np.median(true)),
                    "confidence_median": float(np.median(estimate["confidence"]))})
    summary.update({f"argmax_{k}": v for k, v in lead_metrics(np.asarray(plain.lead_s), true).items()})
    summary.update({f"baseline_{k}": v for k, v in lead_metrics(baseline, true).items()})
    return summary, {"estimate": estimate, "baseline": baseline, "true": true, "step_seconds": step_s,
                     "log_prior": log_prior}

  def add_report_sections(self, page, summary: dict, samples: dict) -> None:
    lags_s = np.arange(self.max_lag + 1) * samples["step_seconds"]
    page.add_line("Mean similarity vs lag over the events (marked: the true median lead)", lags_s,
                  samples["estimate"]["similarity"].mean(0), "lag (s)", "cosine similarity",
                  marker_x=float(np.median(samples["true"])))
    if samples["log_prior"] is not None:
      page.add_line(f"Prior over lags from the {self.config.eval.prior.split} split's visual onsets (marked: the "
                    "true median lead)", lags_s, np.exp(np.asarray(samples["log_prior"])), "lag (s)", "probability",
                    marker_x=float(np.median(samples["true"])))
    page.add_scatter("Per event: true vs estimated lead", samples["true"],
                     {"aligner": samples["estimate"]["lead_s"], "baseline": samples["baseline"]},
                     "true lead (s)", "estimated lead (s)")


def lead_metrics(estimated: np.ndarray, true: np.ndarray) -> dict[str, float]:
  """MAE, share within 10 s and the median estimate; events without an estimate (NaN) are misses."""
  error = np.abs(np.asarray(estimated, np.float64) - true)
  found = np.isfinite(error)
  return {"lead_mae_s": float(error[found].mean()) if found.any() else float("nan"),
          "lead_within_10s": float(np.mean(np.where(found, error, np.inf) <= 10.0)),
          "lead_median_est_s": float(np.nanmedian(estimated)) if found.any() else float("nan")}


def steadiness(current: np.ndarray, smooth_steps: int) -> np.ndarray:
  """(N, T) per step: minus the std of the step's rows (mean over phases), smoothed over steps."""
  per_step = -np.asarray(current, np.float64).std(axis=2).mean(axis=-1)
  kernel = np.ones(smooth_steps) / smooth_steps
  return np.stack([np.convolve(s, kernel, mode="same") for s in per_step])


def hotness(video: np.ndarray) -> np.ndarray:
  """(N, W) per step: the 99th percentile over pixels of red minus blue (the spot is red to white, the
  shell grey), averaged over the step's frames."""
  v = np.asarray(video, np.float32)
  heat = v[..., 0] - v[..., 2]
  return np.percentile(heat.reshape(*heat.shape[:3], -1), 99, axis=-1).mean(-1)


def baseline_leads(video: np.ndarray, current: np.ndarray, window: int, max_lag: int, step_seconds: float,
                   smooth_steps: int) -> np.ndarray:
  """The hand-crafted lead: the lag whose current steadiness correlates best with video hotness."""
  hot = hotness(video)                                          # (N, W)
  steady = steadiness(current, smooth_steps)                    # (N, H + W)
  total = steady.shape[1]
  lags = np.arange(max_lag + 1)
  starts = total - window - lags                                # (L,)
  windows = steady[:, starts[:, None] + np.arange(window)]      # (N, L, W)
  a = hot - hot.mean(-1, keepdims=True)
  b = windows - windows.mean(-1, keepdims=True)
  corr = np.einsum("nw,nlw->nl", a, b) / np.maximum(np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(b, axis=-1),
                                                    1e-12)
  return lags[np.argmax(corr, -1)] * step_seconds
