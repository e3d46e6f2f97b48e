"""A split's step sequences and their codes, for the evaluators of a Uni-Code model (codebook, probes,
warning).

`read` cuts every `stride`-th sequence of a split (at most `limit`) with the job's geometry
(`context.inputs`) into global batches, padded to whole batches (`valid` marks the real sequences),
with each sequence's recording and its current's last second. `codes` runs the job's `encode` predict
function over them, data-parallel, and gathers the codes of both modalities, the per-sequence
reconstruction errors and the step labels in order without the padding. Both go through the
evaluation's `Shared` store under explicit keys, so evaluators that ask for the same split with the same
weights share one pass.
"""

from __future__ import annotations

import jax
import numpy as np

from fmjax.data import pipeline
from fmjax.evals.base import Context, Shared
from fmjax.runtime import console, errors
from fmjax.runtime.parallel import REPLICATED, SHARDED

# What evaluation sequences carry besides the model's inputs: which are real (not padding), and where
# each comes from (its recording, its current's last second).
SEQUENCE_KEYS = ("valid", "recording", "current_second")
MODEL_KEYS = ("video", "current", "labels")


def read(context: Context, shared: Shared, split: str, stride: int, limit: int = 0, batch: int = 64) -> list[dict]:
  """This host's blocks of the split's global batches of sequences, read once per evaluation."""
  return shared.get(("sequences", split, stride, limit, batch),
                    lambda: list(console.bar(_sequences(context, split, stride, limit, batch),
                                             phase="evaluating: reading", unit="batch")))


def _sequences(context: Context, split: str, stride: int, limit: int, batch: int):
  data, spec = context.data, context.inputs["spec"]
  samples = pipeline.split_samples(data.recordings, data.split(split), "sequence", **spec)[::stride]
  samples = samples[:limit] if limit else samples
  dataset = pipeline.make_dataset(data.recordings, samples, sample_kind="sequence",
                                  batch_size=batch // jax.process_count(), sample_spec=spec,
                                  worker_count=context.inputs["worker_count"], shuffle=False, num_epochs=1,
                                  drop_remainder=False, pad=True)
  return ({k: b[k] for k in (*MODEL_KEYS, *SEQUENCE_KEYS)} for b in dataset)


def spread_over_train(context: Context, count: int) -> tuple[str, int, int]:
  """The `read` arguments (split, stride, limit) of about `count` training sequences spread evenly over the
  train split (what the heads of the probes and the warning are fitted on)."""
  return "train", max(1, len(context.data.split("train")) // count), count


def codes(context: Context, shared: Shared, par, weights: str, variables: dict, split: str, stride: int,
          limit: int = 0, batch: int = 64) -> dict[str, np.ndarray]:
  """Codes (N, L) of both modalities, per-sequence reconstruction errors, step labels, recordings and
  current end seconds of the split's sequences (`read`), encoded with `variables` (host arrays) once
  per evaluation for each `weights` name ('trained', 'untrained')."""
  return shared.get(("codes", weights, split, stride, limit, batch),
                    lambda: _encode(context, par, variables, read(context, shared, split, stride, limit, batch)))


def code_keys(levels: int, modality: str) -> tuple[str, ...]:
  """The keys of `codes`' output holding each codebook level's codes of `modality`: `codes_<m>` (level 1),
  `codes2_<m>` (H-DCID's level 2)."""
  return tuple(f"codes{'' if level == 1 else level}_{modality}" for level in range(1, levels + 1))


def level_vectors(tables: tuple[np.ndarray, ...], codes: dict, modality: str) -> np.ndarray:
  """Each step's vector (N, L, ΣD_l): the concatenation over levels of `tables[l][codes of level l]`."""
  keys = code_keys(len(tables), modality)
  return np.concatenate([np.asarray(table)[codes[key]] for table, key in zip(tables, keys)], -1)


def _encode(context: Context, par, variables: dict, batches: list[dict]) -> dict[str, np.ndarray]:
  encode = context.predict_fns["encode"]

  def apply(variables, batch):
    return {**encode(variables, batch), **{k: batch[k] for k in ("labels", *SEQUENCE_KEYS)}}

  if not batches:
    raise errors.ConfigError("no sequence to evaluate: the split holds none with enough current before it")
  apply = par.wrap(apply, (REPLICATED, SHARDED), SHARDED)
  variables = par.put_state(variables)
  parts = []
  for batch in console.bar(par.batches(batches), phase="evaluating: encoding", unit="batch", total=len(batches)):
    out = par.to_host(apply(variables, batch), SHARDED)
    parts.append({k: v[out["valid"]] for k, v in out.items() if k != "valid"})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
