"""An early warning from the current alone, learned from video labels alone (Uni-Code's cross-modal use).

A linear head is fitted on the video codes of training sequences with the video labels (the V->C probe
of `fmjax.evals.probes`). It then scores every step of each recording's whole current stream: the code
of step k is the last code of the current sequence that ends at step k (causal; nothing later is seen).
The score P(abnormal), averaged over the last n steps, raises an alarm above a threshold; both are
fitted on the training split only (`fit_rule`): n among `smooth_steps` by leaving each training
recording out in turn (the n whose held-out alarms warn of the most training events with at most
`false_per_h` false alarms per hour), then the lowest threshold whose false alarms over all training
recordings stay within `false_per_h`. An alarm onset is false when no visual onset (by the video labels) follows it
within `confirm_s` and the anomaly is not visible then (by the video labels); an alarm that stays on
counts as raised again every `confirm_s`. The hand-crafted detector beside it scores each step by the
current's unsteadiness (the std of its rows, mean over the phases) and goes through the same rule; so
does, with `fmformer_from` naming the workdir of a `configs/fmformer.py:current` run, that supervised
current-only model (trained on the current with the video labels; its P(abnormal) of the current window
ending at each step).

Per test event (`events/<name>.json`): warned when an alarm is on somewhere between its current onset
minus `before_s` and its visual onset; the warning time is the visual onset minus the first such
alarm. Summary: `warning_events`, `warning_recall`, `warning_median_s` (over warned events),
`warning_false_per_h` (test split), the same with `baseline_` for the hand-crafted detector and with
`fmformer_` for the supervised one, and with `toc_` for the same V->C head fitted on the `toc_dims`
dimensions of each codebook that training-free codebook optimisation picks (`probes.toc_dimensions`,
per codebook and concatenated, as the probes' TOC), the smoothings and the thresholds. It uses the job's `encode`
(through `fmjax.evals.sequences`), `encode_current` and `codebooks` predict functions. With H-DCID's two
codebook levels a step's vector is the concatenation of its codes' vectors at both levels, as in the probes
(`encode_current` then gives (codes, quantized, codes2, quantized2)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import heads
from fmjax.checkpoints import runs
from fmjax.data import fmf_format, onsets, pipeline
from fmjax.evals import probes, sequences
from fmjax.evals.base import Context, Evaluation
from fmjax.runtime import errors

DETECTORS = {"": "current only, V->C head (video codes and labels only)",
             "toc_": "current only, V->C head on TOC's codebook dimensions",
             "baseline_": "hand-crafted unsteadiness (std of the rows, mean over phases)",
             "fmformer_": "supervised current-only FmFormer (current with video labels)"}


class Stream(NamedTuple):
  """One recording's part of a split, step by step: the steps' end times (s) and scores, the video
  label of each step, and the visual onsets by the labels (s)."""
  recording: int
  seconds: np.ndarray
  scores: np.ndarray
  labels: np.ndarray
  onsets: np.ndarray


# ----------------------------------------------------------------------------- alarms (numpy, by hand)


def smooth(scores: np.ndarray, steps: int) -> np.ndarray:
  """The causal mean of the last `steps` scores (fewer at the start)."""
  total = np.cumsum(np.concatenate([[0.0], np.asarray(scores, np.float64)]))
  k = np.arange(1, len(scores) + 1)
  return (total[k] - total[np.maximum(k - steps, 0)]) / np.minimum(k, steps)


def alarm_onsets(alarm: np.ndarray, seconds: np.ndarray) -> np.ndarray:
  """The times at which the alarm turns on (off -> on; on at the first step counts)."""
  alarm = np.asarray(alarm, bool)
  rises = alarm & ~np.concatenate([[False], alarm[:-1]])
  return np.asarray(seconds)[rises]


def alarm_raises(alarm: np.ndarray, seconds: np.ndarray, every_s: float) -> np.ndarray:
  """The alarm onsets, and while an alarm stays on, a repeat every `every_s` after its onset (an alarm
  left on for an hour is raised again and again, not once)."""
  alarm, seconds = np.asarray(alarm, bool), np.asarray(seconds, np.float64)
  edges = np.diff(np.concatenate([[False], alarm, [False]]).astype(np.int8))
  starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # episode = steps [start, stop)
  ends = np.where(stops < len(seconds), seconds[np.minimum(stops, len(seconds) - 1)], seconds[-1] + 1e-9)
  return np.concatenate([np.arange(seconds[i], end, every_s) for i, end in zip(starts, ends)] or [np.zeros(0)])


def false_alarms(alarm: np.ndarray, seconds: np.ndarray, visual_onsets: np.ndarray, confirm_s: float,
                 visible: np.ndarray | None = None) -> int:
  """Alarm raises (`alarm_raises`, repeated every `confirm_s`) with no visual onset within `confirm_s` after
  them; a raise while the anomaly is visible (`visible`, the steps' video labels) is not false."""
  raises = alarm_raises(alarm, seconds, confirm_s)
  if visible is not None:
    step = np.clip(np.searchsorted(np.asarray(seconds, np.float64), raises, side="left"), 0, len(seconds) - 1)
    raises = raises[~np.asarray(visible, bool)[step]]
  onsets_ = np.sort(np.asarray(visual_onsets, np.float64))
  nxt = np.searchsorted(onsets_, raises, side="left")              # the first onset at or after each raise
  confirmed = (nxt < len(onsets_)) & (onsets_[np.minimum(nxt, max(len(onsets_) - 1, 0))] <= raises + confirm_s) \
      if len(onsets_) else np.zeros(len(raises), bool)
  return int(len(raises) - np.sum(confirmed))


def fit_threshold(streams: list[Stream], smooth_steps: int, false_per_h: float, confirm_s: float) -> float:
  """The lowest threshold (among the smoothed scores' quantiles) whose false alarms per hour over
  `streams` stay within `false_per_h`."""
  smoothed = [smooth(s.scores, smooth_steps) for s in streams]
  hours = sum(len(s.seconds) for s in streams) * _step_s(streams) / 3600
  candidates = np.unique(np.quantile(np.concatenate(smoothed), np.linspace(0.5, 1.0, 201)))
  for threshold in candidates:
    count = sum(false_alarms(m >= threshold, s.seconds, s.onsets, confirm_s, s.labels > 0)
                for m, s in zip(smoothed, streams))
    if count <= false_per_h * hours:
      return float(threshold)
  return float(candidates[-1]) + 1e-9  # nothing is quiet enough: never alarm


def score_rule(streams: list[Stream], events: dict[int, list[dict]], smooth_steps: int, threshold: float,
               confirm_s: float, before_s: float) -> dict[str, Any]:
  """The alarms of one rule over `streams`: per event its warning (s; NaN: not warned, `event_warnings`),
  the false alarms (`false_alarms`) and the hours covered."""
  warnings, false, hours = [], 0, sum(len(s.seconds) for s in streams) * _step_s(streams) / 3600
  for stream in streams:
    alarm = smooth(stream.scores, smooth_steps) >= threshold
    warnings += event_warnings(stream, alarm, events.get(stream.recording, []), before_s)
    false += false_alarms(alarm, stream.seconds, stream.onsets, confirm_s, stream.labels > 0)
  return {"warnings": np.asarray(warnings, np.float64), "false": false, "hours": hours}


def fit_rule(streams: list[Stream], events: dict[int, list[dict]], smooth_steps: Sequence[int], false_per_h: float,
             confirm_s: float, before_s: float) -> tuple[int, float]:
  """(smoothing steps, threshold) fitted on `streams` (the training split) and their `events`.

  Each candidate smoothing is scored by leave-one-recording-out: the threshold fitted on the other
  recordings (`fit_threshold`) alarms on the one left out. The candidate whose held-out alarms stay
  within `false_per_h` and warn of the most events wins (ties: the shorter smoothing, which warns
  sooner); if none stays within, the one with the fewest held-out false alarms per hour. A threshold
  fitted on the training recordings themselves admits more false alarms on new ones; held-out
  recordings show how many. The threshold is then fitted on all `streams`."""
  candidates = [int(n) for n in np.atleast_1d(smooth_steps)]
  if len(candidates) == 1 or len(streams) < 2:
    return candidates[0], fit_threshold(streams, candidates[0], false_per_h, confirm_s)
  scores = []
  for n in candidates:
    warned, false, hours = 0, 0, 0.0
    for k, left_out in enumerate(streams):
      threshold = fit_threshold(streams[:k] + streams[k + 1:], n, false_per_h, confirm_s)
      held_out = score_rule([left_out], events, n, threshold, confirm_s, before_s)
      warned += int(np.isfinite(held_out["warnings"]).sum())
      false, hours = false + held_out["false"], hours + held_out["hours"]
    rate = false / max(hours, 1e-9)
    scores.append((rate <= false_per_h, warned if rate <= false_per_h else -rate))
  best = max(range(len(candidates)), key=lambda i: (scores[i], -candidates[i]))
  return candidates[best], fit_threshold(streams, candidates[best], false_per_h, confirm_s)


def event_warnings(stream: Stream, alarm: np.ndarray, events: list[dict], before_s: float) -> list[float]:
  """Per event: visual onset minus the first alarm between its current onset - `before_s` and its
  visual onset (NaN: not warned)."""
  out = []
  for event in events:
    inside = (alarm & (stream.seconds >= event["current_onset_s"] - before_s)
              & (stream.seconds <= event["visual_onset_s"]))
    out.append(float(event["visual_onset_s"] - stream.seconds[inside][0]) if inside.any() else float("nan"))
  return out


def _chunked(fn, rows: np.ndarray, size: int = 256) -> np.ndarray:
  """`fn` (a batch of rows -> an array per row) over `rows` `size` at a time (bounded memory), concatenated."""
  if not len(rows):
    return np.zeros((0,), np.float32)
  return np.concatenate([np.asarray(fn(rows[i:i + size])) for i in range(0, len(rows), size)])


def _step_s(streams: list[Stream]) -> float:
  diffs = [np.median(np.diff(s.seconds)) for s in streams if len(s.seconds) > 1]
  return float(np.median(diffs)) if diffs else 1.0


# ----------------------------------------------------------------------------- the evaluator


class Evaluator:
  """The V->C head over whole current streams as alarms, beside the hand-crafted detector."""

  predict_fns = ("encode", "encode_current", "codebooks")

  def __init__(self, context: Context, *, split: str, train_sequences: int, head_steps: int, batch_size: int,
               smooth_steps: Sequence[int], false_per_h: float, confirm_s: float, before_s: float, fmformer_from: str,
               toc_dims: int):
    self.context, self.split, self.batch_size = context, split, batch_size
    self.train_sequences, self.head_steps, self.smooth_steps = train_sequences, head_steps, smooth_steps
    self.false_per_h, self.confirm_s, self.before_s = false_per_h, confirm_s, before_s
    self.fmformer_from, self.toc_dims = fmformer_from, toc_dims
    # One compiled current encoder for every recording and split (codes of each step, codebook as it is).
    self._encode = jax.jit(context.predict_fns["encode_current"])
    self._codebooks = context.predict_fns["codebooks"]
    self._fmformer = None  # the supervised current-only model, read by `run`

  def supervised_model(self) -> tuple[int, Callable] | None:
    """The supervised current-only FmFormer of `fmformer_from`, if named: (its current window in seconds,
    jitted P(abnormal) of windows)."""
    if not self.fmformer_from:
      return None
    run = runs.read(self.fmformer_from, job="fmformer")
    if run.config.model.variant != "current":
      raise errors.CheckpointError(f"{self.fmformer_from}: holds an FmFormer {run.config.model.variant!r} model, "
                                   "not 'current' (train one with configs/fmformer.py:current)")
    model = runs.model_of(run)
    apply = jax.jit(lambda v, c: jax.nn.softmax(model.apply(v, current=c, train=False).astype(jnp.float32))[:, 1])
    return run.config.input.current_seconds, functools.partial(apply, run.variables)

  def fit_heads(self, par, variables: dict, shared) -> dict[str, tuple[heads.Probe, tuple[np.ndarray, ...]]]:
    """The V->C heads by detector name ('', and 'toc_' with `toc_dims`): each fitted on the video code vectors
    of the same training sequences, with the video labels, and the codebook tables (one per level, on the
    head's dimensions) it reads."""
    train = sequences.codes(self.context, shared, par, "trained", variables,
                            *sequences.spread_over_train(self.context, self.train_sequences), batch=self.batch_size)
    tables = {"": tuple(np.asarray(e) for e in self._codebooks(variables))}
    if self.toc_dims:
      tables["toc_"] = tuple(e[:, probes.toc_dimensions(e, self.toc_dims)] for e in tables[""])
    out = {}
    for name, levels in tables.items():
      vectors = sequences.level_vectors(levels, train, "video")
      out[name] = (heads.fit(jnp.asarray(vectors.reshape(-1, vectors.shape[-1])), jnp.asarray(train["labels"].ravel()),
                             steps=self.head_steps), levels)
    return out

  def streams(self, par, variables: dict, split: str, fitted: dict) -> dict[str, list[Stream]]:
    """Every recording's part of `split` as streams of each detector (keys of `DETECTORS`); `fitted` holds
    the V->C heads (`fit_heads`)."""
    data, spec = self.context.data, self.context.inputs["spec"]
    num_steps, step_seconds = spec["num_steps"], spec["step_seconds"]
    rows = fmf_format.ROWS_PER_SECOND * step_seconds
    samples = data.split(split)
    split_onsets = onsets.label_onsets(data.recordings, samples)
    out = {name: [] for name in DETECTORS if name in fitted or name == "baseline_" or
           (name == "fmformer_" and self._fmformer)}
    for position, rec in enumerate(data.recordings):
      frames = samples[samples[:, 0] == position, 1]
      if not len(frames):
        continue
      steps = np.asarray(rec.current[:len(rec.current) // rows * rows], np.float32).reshape(-1, rows, 3)
      ends = np.arange(num_steps - 1, len(steps))                    # steps with a whole sequence before them
      seconds = rec.current_seconds[(ends + 1) * rows - 1].astype(np.float64)
      first, last = rec.frame_seconds[frames.min()], rec.frame_seconds[frames.max()]
      keep = (seconds >= first) & (seconds <= last)
      ends, seconds = ends[keep], seconds[keep]
      windows = {"current": steps[ends[:, None] + np.arange(-num_steps + 1, 1)]}

      def score(part: dict) -> dict:
        # each level's codes of the last step: encode_current gives (codes, quantized) per level
        last = lambda chunk: jnp.stack(self._encode(variables, jnp.asarray(chunk))[::2], -1)[:, -1]
        codes = _chunked(last, part["current"])  # (N, levels)
        scored = {}
        for name, (head, tables) in fitted.items():
          vectors = jnp.concatenate([jnp.asarray(t)[codes[:, level]] for level, t in enumerate(tables)], -1)
          scored[name or "scores"] = np.asarray(jax.nn.softmax(heads.logits(head, vectors))[:, 1])
        return scored

      scored = par.map_rows(score, windows)
      frame_of = np.clip(np.searchsorted(rec.frame_seconds, seconds, side="right") - 1, 0, len(rec.labels) - 1)
      labels = np.asarray(rec.labels)[frame_of]
      visual = np.asarray([o.second for o in split_onsets if o.recording == position])
      scores = {**{name: scored[name or "scores"] for name in fitted},
                "baseline_": steps[ends].std(axis=1).mean(-1)}   # the hand-crafted score
      if self._fmformer:
        scores["fmformer_"] = par.map_rows(functools.partial(self._supervised, rec), {"seconds": seconds})["scores"]
      for name in out:
        out[name].append(Stream(position, seconds, scores[name], labels, visual))
    return out

  def _supervised(self, rec, part: dict) -> dict:
    """The supervised current-only FmFormer's P(abnormal) of the current window ending at each second."""
    current_seconds, apply = self._fmformer
    window = lambda seconds: apply(pipeline.current_windows(rec, seconds.astype(np.int64), current_seconds))
    return {"scores": _chunked(window, part["seconds"])}

  def run(self, par, variables, shared) -> Evaluation:
    par.check_batch_size(self.batch_size)
    variables = jax.device_get(par.get_state(variables))
    self._fmformer = self.supervised_model()
    fitted = self.fit_heads(par, variables, shared)
    train = self.streams(par, variables, "train", fitted)
    test = self.streams(par, variables, self.split, fitted)
    data = self.context.data
    events = {split: {position: [e for e in data.events(position) or [] if e.get("split") == split]
                      for position in range(len(data.recordings))} for split in ("train", self.split)}
    summary, shown = {}, {}
    for name in train:
      smooth_steps, threshold = fit_rule(train[name], events["train"], self.smooth_steps, self.false_per_h,
                                         self.confirm_s, self.before_s)
      result = score_rule(test[name], events[self.split], smooth_steps, threshold, self.confirm_s, self.before_s)
      warnings, warned = result["warnings"], np.isfinite(result["warnings"])
      summary.update({f"{name}warning_recall": float(warned.mean()) if len(warnings) else float("nan"),
                      f"{name}warning_median_s": float(np.median(warnings[warned])) if warned.any() else float("nan"),
                      f"{name}warning_false_per_h": result["false"] / max(result["hours"], 1e-9),
                      f"{name}warning_threshold": threshold, f"{name}warning_smooth_steps": smooth_steps})
      shown[name] = (test[name], smooth_steps, threshold)
    summary["warning_events"] = int(sum(len(e) for e in events[self.split].values()))
    return Evaluation(summary, functools.partial(self.add_sections, summary, shown, events[self.split]))

  def add_sections(self, summary: dict, shown: dict, events: dict, page) -> None:
    """The detectors side by side; per test recording, the current-only alarm score against the video
    labels and the events' onsets."""
    def row(name: str) -> str:
      figure = lambda key: summary[f"{name}warning_{key}"]
      return (f"{figure('recall'):.2f} / {figure('median_s'):.0f} s / {figure('false_per_h'):.2f} / "
              f"{figure('smooth_steps')}, {figure('threshold'):.4g}")

    page.add_table(f"Early warning ({self.split} split, {summary['warning_events']} events): warned / median "
                   f"warning / false alarms per hour / smoothing steps, threshold",
                   {DETECTORS[name]: row(name) for name in shown})
    streams, smooth_steps, threshold = shown[""]
    for stream in streams:
      name = self.context.data.recordings[stream.recording].name
      page.add_timeline(f"Early warning from the current, {name} ({self.split} split)", stream.seconds,
                        {f"alarm score (mean of {smooth_steps} steps)": smooth(stream.scores, smooth_steps),
                         "video label": stream.labels},
                        {"current onset": [e["current_onset_s"] for e in events[stream.recording]],
                         "visual onset": [e["visual_onset_s"] for e in events[stream.recording]]},
                        threshold=threshold, xlabel="time (s)")
