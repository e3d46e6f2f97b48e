"""Cross-modal zero-shot probes of Uni-Code's codes: labels learned on one modality, tested on the other.

Linear heads on code vectors (`fmjax.analysis.heads`) are fitted on one modality's training steps with labels
and tested on each modality's steps of the split: 'v2c', 'c2v' (zero-shot transfer) and 'v2v',
'c2c' (the labelled-modality ceilings). At sequence level, the Uni-Code paper's head (Linear -> max
over steps -> Linear) on the quantized vectors of one modality's sequences, labelled abnormal when any
step is, is tested on each modality's sequences (keys `seq_<pair>_<metric>`). The same heads
on a model that was never trained (same seed) are the no-pretraining baseline (`baseline_...`), and
`majority_rate` is the share of the commoner class among the test steps (what "always that class"
scores). With `toc_dims` k > 0 the trained model's heads are also fitted on the k codebook dimensions
that training-free codebook optimisation picks (`toc_dimensions`; keys `toc_...`). The pretrain job
and the transfer job run this one evaluator.

Settings (`config.evals.<name>`): `split`, a test sequence every `stride_s` seconds (0: every frame's);
`train_sequences` training sequences spread over the train split; `head_steps` full-batch Adam steps per head;
`batch_size` sequences per encoding batch; summary keys `<pair>_<metric>` for `metrics` (empty: all of
`fmjax.analysis.metrics.classification_metrics`), and `baseline_<pair>...` for the baseline; the same
names in every job (the pretrain job's were `probe_<pair>_...` before 2026-12-05).
It uses the job's `encode`, `codebooks` and `init` predict functions (through `fmjax.evals.sequences`).

With H-DCID's two codebook levels a step's vector is the concatenation of its codes' vectors at each level
(`sequences.level_vectors`), and TOC picks k dimensions of each codebook separately, concatenated (2k), as the
official H-DCID+TOC does (TOC_H-DCID code/src/ave_mlvq.py:141-142, 221-226; its heads take 2·choose_channel
inputs, ave_mlvq.py:104-105). The summary keys are the same for one and two levels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import heads, metrics
from fmjax.evals import sequences
from fmjax.evals.base import Context, Evaluation
from fmjax.models import unicode

MODALITIES = unicode.MODALITIES
PAIRS = ("v2c", "c2v", "v2v", "c2c")


class Evaluator:
  """The four probes of the trained model, and the zero-shot ones of a never-trained model."""
  predict_fns = ("encode", "codebooks", "init")

  def __init__(self, context: Context, *, split: str, stride_s: float, train_sequences: int, head_steps: int,
               batch_size: int, metrics: tuple[str, ...], toc_dims: int):
    self.context, self.split, self.stride_s, self.batch_size = context, split, stride_s, batch_size
    self.train_sequences, self.head_steps = train_sequences, head_steps
    self.metrics, self.toc_dims = tuple(metrics), toc_dims

  def run(self, par, variables, shared) -> Evaluation:
    par.check_batch_size(self.batch_size)
    context = self.context
    codebooks = lambda variables: tuple(np.asarray(e) for e in context.predict_fns["codebooks"](variables))
    reads = {"train": sequences.spread_over_train(context, self.train_sequences),
             "test": (self.split, context.data.frame_stride(self.stride_s), 0)}
    trained = jax.device_get(par.get_state(variables))
    untrained = jax.device_get(jax.jit(context.predict_fns["init"])(jax.random.PRNGKey(context.seed)))
    summary = {}
    runs = [("", "trained", trained, None), ("baseline_", "untrained", untrained, None)]
    if self.toc_dims:  # the trained codebook's TOC dimensions only, beside all of them
      runs.append(("toc_", "trained", trained, tuple(toc_dimensions(e, self.toc_dims) for e in codebooks(trained))))
    for name, weights, variables_, dims in runs:
      train, test = (sequences.codes(context, shared, par, weights, variables_, *reads[part], batch=self.batch_size)
                     for part in ("train", "test"))
      tables = codebooks(variables_) if dims is None else tuple(e[:, d] for e, d in zip(codebooks(variables_), dims))
      levels = {"": cross_modal_probes(tables, train, test, self.head_steps),
                "seq_": sequence_probes(tables, train, test, self.head_steps, context.seed)}
      for level, probes in levels.items():
        for pair in PAIRS:
          summary.update({f"{name}{level}{pair}_{k}": v for k, v in probes[pair].items()
                          if not self.metrics or k in self.metrics})
    test_labels = sequences.codes(context, shared, par, "trained", trained, *reads["test"],
                                  batch=self.batch_size)["labels"]  # all processes', without padding
    abnormal = float(test_labels.mean())
    summary.update({"test_steps": int(test_labels.size), "test_abnormal_share": abnormal,
                    "majority_rate": max(abnormal, 1 - abnormal)})
    return Evaluation(summary, functools.partial(self.add_sections, summary))

  def add_sections(self, summary: dict, page) -> None:
    """One table per level, a row per model and pair: the metrics kept (trained, TOC, never trained)."""
    shown = self.metrics or ("acc", "bacc", "f1", "fdr", "mdr")
    models = {"": "", "toc_": f"TOC {self.toc_dims} dims ", "baseline_": "no pretraining "}
    for level, what in (("", "per step, linear"), ("seq_", "per sequence, Linear -> max over steps -> Linear")):
      rows = {}
      for model, label in models.items():
        for pair in PAIRS:
          keys = [f"{model}{level}{pair}_{k}" for k in shown]
          if keys[0] in summary:
            rows[f"{label}{pair}"] = " / ".join(f"{summary[k]:.3f}" for k in keys)
      rows["majority class"] = f"{summary['majority_rate']:.3f} (accuracy)"
      page.add_table(f"Probes: {' / '.join(shown)} ({self.split} split, {what})", rows)


def toc_dimensions(embedding: np.ndarray, k: int) -> np.ndarray:
  """Training-free codebook optimisation: the `k` dimensions with the highest score
  -0.7 * mean over code pairs i != j of E_id * E_jd + 0.3 * variance over codes of E_id
  (dimensions that tell codes apart rather than sharing one offset), in their original order."""
  e = np.asarray(embedding, np.float64)
  num_codes = len(e)
  pair_mean = (e.sum(0) ** 2 - (e ** 2).sum(0)) / (num_codes * (num_codes - 1))
  score = -0.7 * pair_mean + 0.3 * e.var(0)
  return np.sort(np.argsort(-score, kind="stable")[:k])


def cross_modal_probes(tables: tuple[np.ndarray, ...], train: dict, test: dict,
                       steps: int) -> dict[str, dict[str, float]]:
  """Official metrics of linear heads on code vectors, fitted on one modality's training steps and
  tested on each modality's test steps, by pair ('v2c', 'c2v', 'v2v', 'c2c').

  `tables` holds each level's code vectors (K_l, D_l); `train` and `test` hold each level's codes of both
  modalities (`codes_video`, `codes_current`, and `codes2_<m>` for level 2; (N, L)) and step `labels` (N, L).
  """
  out = {}
  vectors = lambda split, m: jnp.asarray(sequences.level_vectors(tables, split, m).reshape(-1, sum(
      t.shape[-1] for t in tables)))
  for source in MODALITIES:
    head = heads.fit(vectors(train, source), jnp.asarray(train["labels"].ravel()), steps=steps)
    for target in MODALITIES:
      predictions = heads.predict(head, vectors(test, target))
      confusion = metrics.confusion_matrix(predictions, jnp.asarray(test["labels"].ravel()))
      out[f"{source[0]}2{target[0]}"] = metrics.classification_metrics(confusion)
  return out


def sequence_probes(tables: tuple[np.ndarray, ...], train: dict, test: dict, steps: int,
                    seed: int) -> dict[str, dict[str, float]]:
  """Official metrics of the Uni-Code paper's sequence head (`heads.fit_sequences`) on the quantized
  vectors (each level's, concatenated) of one modality's training sequences, tested on each modality's test
  sequences, by pair. A sequence's label is 1 when any of its steps is abnormal."""
  tables = tuple(jnp.asarray(t) for t in tables)
  label = lambda split: jnp.asarray(split["labels"].max(1))
  codes = lambda split, m: tuple(jnp.asarray(split[key]) for key in sequences.code_keys(len(tables), m))
  out = {}
  for source in MODALITIES:
    head = heads.fit_sequences(tables, codes(train, source), label(train), jax.random.PRNGKey(seed), steps=steps)
    for target in MODALITIES:
      predictions = heads.predict_sequences(head, tables, codes(test, target))
      out[f"{source[0]}2{target[0]}"] = metrics.classification_metrics(metrics.confusion_matrix(predictions,
                                                                                                label(test)))
  return out
