"""Uni-Code's codebook on a split: code use, perplexity, cross-modal code agreement, reconstruction.

Settings (`config.evals.<name>`): `split`, a sequence every `stride_s` seconds (0: every frame's),
`batch_size` (sequences per encoding batch), and `agreement_permutations` re-pairings for the
significance of the agreement and of the codes' mutual information (0: off).
On the synthetic furnace the same information between the ground-truth states of the aligned steps
(`code_mi_truth_bits`) is the ceiling of what the codes can share about the anomaly.
It uses the job's `encode` and `codebooks` predict functions (through `fmjax.evals.sequences`). With
H-DCID's second codebook level the same use and agreement statistics of level 2's codes follow under the same
keys with a `2` (`perplexity2`, `codes_used2`, `code_agreement2`, `code_mi_bits2`, ..., `recon2_video`, ...);
no joint information of both levels' codes (its histogram would have (K1·K2)² cells).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fmjax.analysis import codebook_stats
from fmjax.evals import sequences
from fmjax.evals.base import Context, Evaluation
from fmjax.models import unicode, vq

MODALITIES = unicode.MODALITIES


class Evaluator:
  """Codebook statistics of the trained model's codes for both modalities."""
  predict_fns = ("encode", "codebooks")

  def __init__(self, context: Context, *, split: str, stride_s: float, batch_size: int,
               agreement_permutations: int):
    self.context, self.split, self.stride_s, self.batch_size = context, split, stride_s, batch_size
    self.agreement_permutations = agreement_permutations

  def run(self, par, variables, shared) -> Evaluation:
    par.check_batch_size(self.batch_size)
    context = self.context
    variables = jax.device_get(par.get_state(variables))
    books = context.predict_fns["codebooks"](variables)
    stride = context.data.frame_stride(self.stride_s)
    test = sequences.codes(context, shared, par, "trained", variables, self.split, stride, batch=self.batch_size)
    use, summary = self.statistics(test, int(np.shape(books[0])[0]))
    summary.update({
        **truth_information(context.data, context.inputs["spec"], test),
        "current_shift_s": int(context.inputs["spec"]["current_shift_s"]),
        "recon_video": float(test["recon_video"].mean()), "recon_current": float(test["recon_current"].mean()),
        "eval_sequences": int(len(test["labels"])), "abnormal_share": float(test["labels"].mean()),
    })
    if len(books) > 1:  # H-DCID's level 2, its codes given as codes2_<m>
      level2 = {f"codes_{m}": test[f"codes2_{m}"] for m in MODALITIES}
      _, statistics2 = self.statistics(level2, int(np.shape(books[1])[0]))
      summary.update({f"{k}2": v for k, v in statistics2.items()})
      summary.update({f"recon2_{m}": float(test[f"recon2_{m}"].mean()) for m in MODALITIES})
    return Evaluation(summary, functools.partial(self.add_sections, use))

  def statistics(self, test: dict, num_codes: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(each modality's code use, the use and agreement statistics) of one level's codes `codes_<m>` in `test`."""
    seed = self.context.seed
    use = {m: np.bincount(test[f"codes_{m}"].ravel(), minlength=num_codes) for m in MODALITIES}
    share = {m: use[m] / use[m].sum() for m in MODALITIES}
    return use, {
        "perplexity": float(vq.perplexity(jnp.asarray(use["video"] + use["current"]))),
        "perplexity_video": float(vq.perplexity(jnp.asarray(use["video"]))),
        "perplexity_current": float(vq.perplexity(jnp.asarray(use["current"]))),
        "codes_used": int(np.count_nonzero(use["video"] + use["current"])),
        "code_agreement": float(np.mean(test["codes_video"] == test["codes_current"])),
        "code_agreement_chance": float(np.sum(share["video"] * share["current"])),
        **agreement_significance(test, self.agreement_permutations, seed),
        **shared_information(test, num_codes, self.agreement_permutations, seed),
    }

  def add_sections(self, use: dict[str, np.ndarray], page) -> None:
    """Codebook usage per modality, most used codes first."""
    order = np.argsort(-(use["video"] + use["current"]))
    for m in MODALITIES:
      page.add_bars(f"Codebook usage, {m} ({self.split} split; codes by overall use)", use[m][order],
                    "code (by overall use)", "steps")


def agreement_significance(codes: dict, permutations: int, seed: int) -> dict[str, float]:
  """`code_agreement_z` and `code_agreement_p` of `codebook_stats.agreement_test` (video sequences paired with
  other sequences' current as the null): how clearly the agreement is above chance."""
  if permutations <= 0:
    return {}
  test = codebook_stats.agreement_test(jnp.asarray(codes["codes_video"]), jnp.asarray(codes["codes_current"]),
                                       jax.random.PRNGKey(seed), permutations=permutations)
  return {"code_agreement_z": float(test["z"]), "code_agreement_p": float(test["p"])}


def shared_information(codes: dict, num_codes: int, permutations: int, seed: int) -> dict[str, float]:
  """`code_mi_bits`, the mutual information of the video and current codes at aligned steps, beside its
  permutation null's mean (`code_mi_null_bits`), `code_mi_z` and `code_mi_p`
  (`codebook_stats.mutual_information_test`)."""
  if permutations <= 0:
    return {}
  test = codebook_stats.mutual_information_test(jnp.asarray(codes["codes_video"]), jnp.asarray(codes["codes_current"]),
                                                jax.random.fold_in(jax.random.PRNGKey(seed), 1), num_codes,
                                                permutations=permutations)
  return {"code_mi_bits": float(test["bits"]), "code_mi_null_bits": float(test["null_mean"]),
          "code_mi_z": float(test["z"]), "code_mi_p": float(test["p"])}


STEADINESS_LOWERED = 0.5  # the synthetic current's fluctuation relative to normal (1.0) below which it is "steady"


def truth_information(data, spec: dict, codes: dict) -> dict[str, float]:
  """`code_mi_truth_bits`: the mutual information of the ground-truth states at the aligned steps, video
  "spot visible" (the step's label: the synthetic labels are the spot's mask) and current "steadiness
  lowered" (the mean steadiness over the step's seconds of `truth/<name>.npz` below
  `STEADINESS_LOWERED`). About one bit at most: the anomaly state is what the modalities share. {} where
  the data has no truth (the real benchmark)."""
  truths = [data.truth(r) for r in range(len(data.recordings))]
  if not len(codes["labels"]) or any(t is None or "steadiness" not in t for t in truths):
    return {}
  num_steps, step_seconds = spec["num_steps"], spec["step_seconds"]
  lowered = np.zeros(codes["labels"].shape, np.int32)
  for r, (rec, truth) in enumerate(zip(data.recordings, truths)):
    mine = codes["recording"] == r
    last = np.searchsorted(rec.current_second_values, codes["current_second"][mine], side="right") - 1
    seconds = last[:, None] - num_steps * step_seconds + 1 + np.arange(num_steps * step_seconds)
    steadiness = truth["steadiness"][seconds].reshape(-1, num_steps, step_seconds).mean(-1)
    lowered[mine] = steadiness < STEADINESS_LOWERED
  bits = codebook_stats.mutual_information_bits(jnp.asarray(codes["labels"] > 0, jnp.int32), jnp.asarray(lowered), 2, 2)
  return {"code_mi_truth_bits": float(bits)}
