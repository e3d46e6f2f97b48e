"""Uni-Code pretraining as a training task: sequences, the loss as a table of terms, and the CLUB nets.

The model (`fmjax.models.unicode`) keeps its codebook in the `vq_ema` collection (`model_state`),
updated by MM-EMA inside the step. The CLUB variational nets are the task's aux state
(`TrainState.aux`: their params and their own Adam state), fitted for `config.club.steps` inner
steps per train step on stop-gradient features, only while the `club` term is on. The evaluations
are `fmjax.evals.codebook` and `fmjax.evals.probes`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fmjax.runtime import console, errors
from fmjax.data import downsampled, pipeline, tfds_fmf
from fmjax.models import club, unicode, vq
from fmjax.train import objective, task
from fmjax.runtime.parallel import AXIS, REPLICATED, SHARDED

MODALITIES = unicode.MODALITIES
# What evaluation sequences carry besides the model's inputs: which are real (not padding), and where
# each comes from (its recording, its current's last second), passed through `encode`.
SEQUENCE_KEYS = ("valid", "recording", "current_second")


def build_model(config: ml_collections.ConfigDict, image_size: int, axis_name: str | None = None) -> unicode.UniCode:
  """`Model(**config.model)` of `config.model_name` (fmjax.models.unicode); decoder sizes follow the step
  geometry of `config.input`."""
  downsample = config.input.downsample
  if image_size % downsample:
    raise errors.ConfigError(f"input.downsample={downsample} does not divide the frames' size {image_size}")
  side = image_size // downsample
  return task.find(config.model_name, "Model")(**{**config.model, "cpc_steps": tuple(config.model.cpc_steps)},
                                               video_size=config.input.frames_per_step * side * side * 3,
                                               current_size=2 * config.input.step_seconds * 3, axis_name=axis_name)


def current_shift(settings: ml_collections.ConfigDict) -> int:
  """Whole seconds by which each current sequence ends before its video sequence (`config.input`):
  `current_shift_s`, or with `current_shift_from` an align run's estimated lead (`lead_median_est_s`
  of its summary.json, rounded). Runs saved before these keys existed paired at 0."""
  source = settings.get("current_shift_from", "")
  if not source:
    shift = settings.get("current_shift_s", 0)
  else:
    path = os.path.join(source, "summary.json")
    try:
      with open(path) as f:
        shift = json.load(f)["lead_median_est_s"]
    except FileNotFoundError:
      raise errors.ConfigError(f"input.current_shift_from: {path} is missing (name the workdir of a finished "
                               f"configs/align.py run)") from None
    except (KeyError, json.JSONDecodeError, TypeError):
      raise errors.ConfigError(f"input.current_shift_from: {path} holds no lead_median_est_s (not an align "
                               f"run's summary)") from None
  if not np.isfinite(shift) or shift < 0:
    raise errors.ConfigError(f"input.current_shift_s must be a finite number of seconds >= 0, not {shift}")
  return int(round(shift))


# ------------------------------------------------------------------------------ loss terms


def commitment(outputs: dict, batch: dict) -> jax.Array:
  return outputs["commitment"]


def reconstruction(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
  """Both modalities' mean squared reconstruction errors, summed."""
  per_modality = {f"recon_{m}": outputs[f"recon_{m}"].mean() for m in MODALITIES}
  return sum(per_modality.values()), per_modality


def cross_cpc(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
  return outputs["cpc"], {"cpc_acc_v2c": outputs["cpc_acc_v2c"], "cpc_acc_c2v": outputs["cpc_acc_c2v"]}


def code_matching(outputs: dict, batch: dict) -> jax.Array:
  return vq.code_matching_loss(outputs["distances_video"], outputs["distances_current"], AXIS)


def club_bound(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
  """Both modalities' CLUB upper bounds (computed by the task with the freshly fitted nets), summed."""
  bounds = {f"club_{m}": outputs["club"][f"club_{m}"] for m in MODALITIES}
  return sum(bounds.values()), {**bounds, **{k: v for k, v in outputs["club"].items() if k.startswith("club_nll")}}


LOSS_TERMS = {"commitment": commitment, "recon": reconstruction, "cpc": cross_cpc, "code_matching": code_matching,
              "club": club_bound}


class Task(task.Task):
  """Everything job-specific about Uni-Code pretraining."""
  curve_keys = ("loss", "recon_video", "recon_current", "perplexity", "code_agreement", "cpc_acc_v2c", "lr")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf | None = None):
    objective.check(config.loss, LOSS_TERMS, config.job)
    self.config = config
    self.data = data or tfds_fmf.load_from_config(config.data)
    height, width = self.data.recordings[0].image_shape
    if height != width:
      raise errors.ConfigError(f"Uni-Code needs square frames; the data's are {height}x{width}")
    self.model = build_model(config, height, axis_name=AXIS)
    self.eval_model = build_model(config, height)
    self.club_net = club.Variational(config.model.specific_dim, config.club.hidden)
    self.club_tx = optax.adam(config.club.lr)
    self.current_shift_s = current_shift(config.input)
    self.sample_spec = dict(num_steps=config.input.num_steps, step_seconds=config.input.step_seconds,
                            frames_per_step=config.input.frames_per_step, downsample_factor=config.input.downsample,
                            current_shift_s=self.current_shift_s)
    self._read = functools.lru_cache(maxsize=None)(self._read_sequences)
    downsampled.ensure(self.data, config.input.downsample)  # after the config checks: reduced frames to slice
    self._encoded: dict[tuple, tuple[list, dict[str, np.ndarray]]] = {}

  # ------------------------------------------------------------------------------ batches

  def _dataset(self, samples: pipeline.SampleIndex, host_batch: int, **kwargs):
    return pipeline.make_dataset(self.data.recordings, samples, sample_kind="sequence", batch_size=host_batch,
                                 sample_spec=self.sample_spec, worker_count=self.config.input.worker_count, **kwargs)

  @staticmethod
  def _fields(batch: dict) -> dict:
    return {"video": batch["video"], "current": batch["current"], "labels": batch["labels"]}

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    dataset = self._dataset(self.data.split("train"), host_batch, seed=seed, start_batch=start_step)
    return map(self._fields, dataset)

  def sequences(self, split: str, stride: int, limit: int = 0, batch: int = 64) -> Iterator[dict]:
    """This host's blocks of every `stride`-th sequence of a split in order (at most `limit`), in global
    batches of `batch` padded to whole batches (`valid` marks the real sequences), with each sequence's
    recording and its current's last second."""
    samples = pipeline.split_samples(self.data.recordings, self.data.split(split), "sequence", **self.sample_spec)
    samples = samples[::stride]
    samples = samples[:limit] if limit else samples
    dataset = self._dataset(samples, batch // jax.process_count(), shuffle=False, num_epochs=1,
                            drop_remainder=False, pad=True)
    return ({**self._fields(b), **{k: b[k] for k in SEQUENCE_KEYS}} for b in dataset)

  def read_sequences(self, split: str, stride: int, limit: int = 0, batch: int = 64) -> list[dict]:
    """`sequences` read into memory, with a bar; read once per run, however many evaluators ask (the
    same list object each time, which is what `encode` memoises on)."""
    return self._read(split, stride, limit, batch)

  def _read_sequences(self, split: str, stride: int, limit: int, batch: int) -> list[dict]:
    return list(console.bar(self.sequences(split, stride, limit, batch), phase="evaluating: reading", unit="batch"))

  # ------------------------------------------------------------------------------ model

  def init(self, rng: jax.Array, batch: dict) -> dict:
    model_rng, _ = jax.random.split(rng)
    return self.eval_model.init(model_rng, video=batch["video"], current=batch["current"])

  def init_aux(self, rng: jax.Array, batch: dict) -> dict:
    """The CLUB nets of both modalities and their Adam states."""
    _, club_rng = jax.random.split(rng)
    x = jnp.zeros((1, self.config.model.dim))
    params = {m: self.club_net.init(k, x)["params"] for m, k in zip(MODALITIES, jax.random.split(club_rng))}
    return {"params": params, "opt_state": {m: self.club_tx.init(params[m]) for m in params}}

  def fit_club(self, aux: dict, outputs: dict, rng: jax.Array) -> tuple[dict, dict]:
    """(aux with each modality's CLUB net fitted on this step's features, its bounds and fitting NLLs)."""
    fitted = {"params": {}, "opt_state": {}}
    logged = {}
    for m, key in zip(MODALITIES, jax.random.split(rng)):
      x = outputs[f"quantized_{m}"].reshape(-1, self.config.model.dim)
      y = outputs[f"specific_{m}"].reshape(-1, self.config.model.specific_dim)
      params, opt_state, nll = club.fit(self.club_net, aux["params"][m], aux["opt_state"][m], self.club_tx, x, y,
                                        self.config.club.steps, axis_name=AXIS)
      fitted["params"][m], fitted["opt_state"][m] = params, opt_state
      logged[f"club_{m}"] = club.upper_bound(self.club_net, params, x, y, key, axis_name=AXIS)
      logged[f"club_nll_{m}"] = nll
    return fitted, logged

  def loss(self, params, model_state: dict, aux: dict, batch: dict, rng: jax.Array) -> task.LossOutput:
    """The weighted Uni-Code loss of this device's shard; updates the codebook and (club on) fits the CLUB nets."""
    codebook_rng, club_rng = jax.random.split(rng)
    outputs, updated = self.model.apply({"params": params, **model_state}, video=batch["video"],
                                        current=batch["current"], update=True, mutable=[vq.COLLECTION],
                                        rngs={"codebook": codebook_rng})
    if "club" in objective.active(self.config.loss):
      aux, outputs["club"] = self.fit_club(aux, outputs, club_rng)
    total, logged = objective.weighted_sum(LOSS_TERMS, self.config.loss, outputs, batch)
    logged.update(commitment=outputs["commitment"], perplexity=vq.perplexity(outputs["code_use"]),  # already global
                  code_agreement=jnp.mean(outputs["codes_video"] == outputs["codes_current"]))
    return total, (logged, dict(updated), aux)

  # ------------------------------------------------------------------------------ evaluation helpers

  def encode(self, par, variables: dict, batches: list[dict]) -> dict[str, np.ndarray]:
    """Codes (N, L) of both modalities, per-sequence reconstruction errors, step labels, recordings and
    current end seconds of all processes' `batches` (this host's, from `read_sequences`), data-parallel
    over `par`'s devices and gathered in order without the padding. Memoised by the content of the
    variables and the identity of `batches`: evaluators that encode the same split with the same weights
    share one pass."""
    key = (_fingerprint(variables), id(batches))
    if key not in self._encoded or self._encoded[key][0] is not batches:
      self._encoded[key] = (batches, self._encode(par, variables, batches))
    return self._encoded[key][1]

  def _encode(self, par, variables: dict, batches: list[dict]) -> dict[str, np.ndarray]:
    keep = ("codes_video", "codes_current", "recon_video", "recon_current")

    def apply(variables, batch):
      out = self.eval_model.apply(variables, video=batch["video"], current=batch["current"])
      return {**{k: out[k] for k in keep}, **{k: batch[k] for k in ("labels", *SEQUENCE_KEYS)}}

    apply = par.wrap(apply, (REPLICATED, SHARDED), SHARDED)
    variables = par.put_state(variables)
    parts = []
    for batch in console.bar(par.batches(batches), phase="evaluating: encoding", unit="batch", total=len(batches)):
      out = par.to_host(apply(variables, batch), SHARDED)
      parts.append({k: v[out["valid"]] for k, v in out.items() if k != "valid"})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def untrained_variables(self, example: dict) -> dict:
    """The variables of a model that was never trained (this config's seed): the no-pretraining baseline."""
    example = jax.tree.map(lambda x: x[:1], example)
    return jax.device_get(jax.jit(self.init)(jax.random.PRNGKey(self.config.seed), example))


def _fingerprint(tree: Any) -> str:
  """A digest of a pytree's structure and leaf bytes (weights or a split's batches: milliseconds)."""
  digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
  for leaf in jax.tree.leaves(tree):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
