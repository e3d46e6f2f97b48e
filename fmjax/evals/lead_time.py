"""The aligner's lead-time evaluation on the furnace's events: how long before the visible anomaly
the current shows it.

For each event of `split` (`events/<name>.json`), the video window that has the visual onset at
`onset_at` of its length and the current history before it (`fmjax.data.onsets.event_windows`) go
through `fmjax.analysis.lag_search.search` (every lag, one vmap) in batches of `batch_size` events, `chunk`
lags per `lax.map` chunk (0: all at once); the estimate is compared with the event's true lead.
With `prior.split` set, the estimate is the posterior's argmax under a prior over lags that the
plain searches of that split's visual onsets give (found in the video labels, so no ground truth is
used): a kernel density of `prior.bandwidth_steps` (0: Silverman's rule), `prior.floor` of it
uniform. The furnace's typical lead tells an anomaly's onset from an older steady stretch that looks
the same. The plain argmax is reported beside it (`argmax_*`), and so is the hand-crafted baseline
(`fmjax.analysis.unsteadiness`, steadiness smoothed over `baseline_smooth_steps`; `baseline_*`).
report.md lists the events one per row: with a handful of test events, one hard event can make most
of a MAE, and the rows show which.

It uses the job's `embed`, `temperature` and (where the job offers it) `pool_steps` predict functions,
and the job's `inputs`: the windows' `pipeline.step_sequence` geometry (`spec`, with the current
history) and `max_lag` in steps.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import lag_search, unsteadiness
from fmjax.data import onsets
from fmjax.evals.base import Context, Evaluation


class Prior(NamedTuple):
  """Where the prior over lags comes from ('' split: none, the search is by similarity alone)."""
  split: str = "train"
  bandwidth_steps: float = 0.0
  floor: float = 0.1


def lead_metrics(estimated: np.ndarray, true: np.ndarray) -> dict[str, float]:
  """MAE, share within 10 s and the median estimate; events without an estimate (NaN) are misses."""
  error = np.abs(np.asarray(estimated, np.float64) - true)
  found = np.isfinite(error)
  return {"lead_mae_s": float(error[found].mean()) if found.any() else float("nan"),
          "lead_within_10s": float(np.mean(np.where(found, error, np.inf) <= 10.0)),
          "lead_median_est_s": float(np.nanmedian(estimated)) if found.any() else float("nan")}


class Evaluator:
  """Lead estimates of the split's events under the prior, by the plain argmax and by the baseline."""
  predict_fns = ("embed", "temperature")

  def __init__(self, context: Context, *, split: str, onset_at: float, chunk: int, batch_size: int,
               baseline_smooth_steps: int, prior: Mapping[str, Any]):
    self.context, self.split, self.onset_at, self.chunk, self.batch_size = context, split, onset_at, chunk, batch_size
    self.baseline_smooth_steps = baseline_smooth_steps
    self.prior = Prior(**prior)
    self.spec, self.max_lag = context.inputs["spec"], context.inputs["max_lag"]
    self.window_steps, self.step_seconds = self.spec["num_steps"], self.spec["step_seconds"]

  def search_windows(self, par, variables: dict, windows: dict,
                     log_prior: jax.Array | None = None) -> dict[str, np.ndarray]:
    """`lag_search.search` over `windows`, each process its block of them in batches of `batch_size`;
    numpy lead_s, confidence, similarity of all of them."""
    rows = {key: windows[key] for key in ("video", "current", "labels")}
    return par.map_rows(functools.partial(self._search, variables, log_prior), rows)

  def _search(self, variables: dict, log_prior: jax.Array | None, windows: dict) -> dict[str, np.ndarray]:
    fns = self.context.predict_fns
    temperature = float(fns["temperature"](variables))
    parts = []
    for start in range(0, len(windows["labels"]), self.batch_size):
      part = slice(start, start + self.batch_size)
      parts.append(lag_search.search(fns["embed"], variables, jnp.asarray(windows["video"][part]),
                                     jnp.asarray(windows["current"][part]), window=self.window_steps,
                                     max_lag=self.max_lag, step_seconds=self.step_seconds, chunk=self.chunk,
                                     abnormal=windows["labels"][part].any(-1), pool_steps=fns.get("pool_steps"),
                                     log_prior=log_prior, temperature=temperature))
    return {key: np.concatenate([np.asarray(getattr(part, key)) for part in parts])
            for key in ("lead_s", "confidence", "similarity")}

  def lead_prior(self, par, variables: dict) -> tuple[jax.Array | None, dict[str, float]]:
    """The log prior over lags from the plain searches of the `prior.split` onsets (by labels);
    None where that split has no onset with a full history (the search is then plain)."""
    data, step_seconds = self.context.data, self.step_seconds
    split_onsets = onsets.label_onsets(data.recordings, data.split(self.prior.split))
    windows = onsets.onset_windows(data.recordings, split_onsets, self.spec, self.onset_at)
    if "lead_s" not in windows:
      return None, {"prior_windows": 0}
    leads = jnp.asarray(self.search_windows(par, variables, windows)["lead_s"] / step_seconds)
    bandwidth = self.prior.bandwidth_steps or float(lag_search.silverman_bandwidth(leads))
    log_prior = lag_search.lag_prior(leads, self.max_lag, bandwidth=bandwidth, floor=self.prior.floor)
    return log_prior, {"prior_windows": int(jnp.isfinite(leads).sum()), "prior_bandwidth_s": bandwidth * step_seconds,
                       "prior_peak_s": float(jnp.argmax(log_prior) * step_seconds)}

  def run(self, par, variables, shared) -> Evaluation:
    del shared
    events = onsets.event_windows(self.context.data, self.split, self.spec, self.onset_at)
    variables = jax.device_get(par.get_state(variables))
    summary, log_prior = {}, None
    if self.prior.split:
      log_prior, summary = self.lead_prior(par, variables)
    estimate = self.search_windows(par, variables, events, log_prior)
    # the same curves by similarity alone
    estimate["argmax_lead_s"] = np.asarray(lag_search.leads_from_curves(
        jnp.asarray(estimate["similarity"]), events["labels"].any(-1), step_seconds=self.step_seconds).lead_s)
    baseline = unsteadiness.baseline_leads(events["video"], events["current"], self.window_steps, self.max_lag,
                                           self.step_seconds, self.baseline_smooth_steps)
    summary.update(self.summarize(events, estimate, baseline))
    return Evaluation(summary, functools.partial(self.add_sections, estimate, baseline, events, log_prior))

  def summarize(self, events: dict, estimate: dict[str, np.ndarray], baseline: np.ndarray) -> dict[str, Any]:
    """The estimate's lead metrics, and those of the plain argmax (`argmax_*`) and the baseline (`baseline_*`)."""
    true = events["lead_s"]
    summary = {**lead_metrics(estimate["lead_s"], true), "events": int(len(true)),
               "events_skipped": int(events["skipped"]), "lead_median_true_s": float(np.median(true)),
               "confidence_median": float(np.median(estimate["confidence"]))}
    summary.update({f"argmax_{key}": value for key, value in lead_metrics(estimate["argmax_lead_s"], true).items()})
    summary.update({f"baseline_{key}": value for key, value in lead_metrics(baseline, true).items()})
    return summary

  def add_sections(self, estimate: dict[str, np.ndarray], baseline: np.ndarray, events: dict,
                   log_prior: jax.Array | None, page) -> None:
    """Mean similarity vs lag, the prior over lags (if any), true vs estimated lead per event, and the
    events one per row (where a MAE over a few events comes from)."""
    true = events["lead_s"]
    lags_s = np.arange(self.max_lag + 1) * self.step_seconds
    true_median = float(np.median(true))
    page.add_line("Mean similarity vs lag over the events (marked: the true median lead)", lags_s,
                  estimate["similarity"].mean(0), "lag (s)", "cosine similarity", marker_x=true_median)
    if log_prior is not None:
      page.add_line(f"Prior over lags from the {self.prior.split} split's visual onsets (marked: the true median "
                    "lead)", lags_s, np.exp(np.asarray(log_prior)), "lag (s)", "probability", marker_x=true_median)
    page.add_scatter("Per event: true vs estimated lead", true, {"aligner": estimate["lead_s"], "baseline": baseline},
                     "true lead (s)", "estimated lead (s)")
    names = [self.context.data.recordings[position].name for position in events["recording"]]
    columns = zip(names, events["onset_s"], true, estimate["lead_s"], estimate["argmax_lead_s"], baseline,
                  estimate["confidence"])
    page.add_rows(f"The {self.split} split's events (leads in seconds)",
                  ["recording", "visual onset (s)", "true lead", "estimate", "error", "plain argmax", "hand-crafted",
                   "confidence"],
                  [(name, onset, lead, est, est - lead, plain, base, conf)
                   for name, onset, lead, est, plain, base, conf in columns])
