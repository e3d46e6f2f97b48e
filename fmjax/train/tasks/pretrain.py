"""Uni-Code pretraining as a training task: sequences, the loss as a table of terms, and the CLUB nets.

The model (`fmjax.models.unicode`) keeps its codebook in the `vq_ema` collection (`model_state`),
updated by MM-EMA inside the step. The CLUB variational nets are the task's aux state
(`TrainState.aux`: their params and their own Adam state), fitted for `config.club.steps` inner
steps per train step on stop-gradient features, only while the `club` term is on. Evaluators get
`encode`, `encode_current`, `codebook` and `init` (`predict_fns`) and the sequence geometry (`inputs`);
the job's evaluations are `fmjax.evals.codebook`, `fmjax.evals.probes` and `fmjax.evals.warning`.

H-DCID (`config.hdcid`, model `fmjax.models.hdcid`): the model's `level2` outputs go through the same loss
terms (`LEVEL2_TERMS`, weights `config.hdcid.loss`, logged as `l2_<term>`), with a second pair of CLUB nets in
`aux["level2"]`; the loss is L1 + `hdcid.weight`·L2 from step round(`warmup_fraction`·num_train_steps) on and
the level-2 CLUB nets are fitted from round(`club_from_fraction`·num_train_steps) on (official: both from epoch 3
of 5, TOC_H-DCID code/src/pretrain_ml.py:561-568, 608-611, 650-665), counted by `aux["step"]` (checkpointed with
the aux state, equal on every device). Unlike the official code's six encoder forwards per step (five CLUB
rounds and the main one, pretrain_ml.py:501-514, each updating both codebooks), one forward per step updates
each codebook once and the CLUB nets are fitted on its stop-gradient features, as at level 1. During the
warm-up level 2 still runs (its codebook is EMA-updated from step 0, as main_model_2.py:1458-1459) and its
terms are logged; its weight is 0.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fmjax.data import pipeline, tfds_fmf
from fmjax.models import club, unicode, vq
from fmjax.runtime import errors, registry
from fmjax.runtime.parallel import AXIS
from fmjax.train import objective, task

MODALITIES = unicode.MODALITIES


def build_model(config: ml_collections.ConfigDict, image_size: int, axis_name: str | None = None) -> unicode.UniCode:
  """`Model(**config.model)` of `config.model_name` (fmjax.models.unicode); decoder sizes follow the step
  geometry of `config.input`."""
  downsample = config.input.downsample
  if image_size % downsample:
    raise errors.ConfigError(f"input.downsample={downsample} does not divide the frames' size {image_size}")
  side = image_size // downsample
  return registry.find(config.model_name, "Model")(**{**config.model, "cpc_steps": tuple(config.model.cpc_steps)},
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
# H-DCID's level 2: the same terms on `outputs["level2"]`, without code matching (the official H-DCID has none,
# TOC_H-DCID code/src/model/main_model_2.py:1602-1603).
LEVEL2_TERMS = {name: LOSS_TERMS[name] for name in ("commitment", "recon", "cpc", "club")}


class Task(task.Task):
  """Everything job-specific about Uni-Code pretraining."""
  curve_keys = ("loss", "recon_video", "recon_current", "perplexity", "code_agreement", "cpc_acc_v2c", "lr")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf,
               current_shift_s: int | None = None):
    """`current_shift_s`: the pairing shift in seconds (`prepare` reads it, `current_shift`); None:
    `config.input.current_shift_s`, where the config names no align run to take it from."""
    if current_shift_s is None:
      if config.input.get("current_shift_from", ""):
        raise errors.ConfigError("input.current_shift_from names a run to read: build the task with Task.prepare")
      current_shift_s = current_shift(config.input)
    objective.check(config.loss, LOSS_TERMS, config.job)
    self.config, self.data = config, data
    self.levels = 2 if "hdcid" in config else 1  # runs saved without config.hdcid are one-level
    if self.levels == 2:
      objective.check(config.hdcid.loss, LEVEL2_TERMS, config.job)
      self.warmup = round(config.hdcid.warmup_fraction * config.num_train_steps)
      self.club_from = round(config.hdcid.club_from_fraction * config.num_train_steps)
      if self.curve_keys:  # a job that trains (transfer draws no curves)
        self.curve_keys = (*self.curve_keys, "perplexity2", "l2_recon_video")
    height, width = data.recordings[0].image_shape
    if height != width:
      raise errors.ConfigError(f"Uni-Code needs square frames; the data's are {height}x{width}")
    self.model = build_model(config, height, axis_name=AXIS)
    self.eval_model = build_model(config, height)
    self.club_net = club.Variational(config.model.specific_dim, config.club.hidden)
    self.club_tx = optax.adam(config.club.lr)
    spec = dict(num_steps=config.input.num_steps, step_seconds=config.input.step_seconds,
                frames_per_step=config.input.frames_per_step, downsample_factor=config.input.downsample,
                current_shift_s=current_shift_s)
    self.inputs = dict(kind="sequence", spec=spec, worker_count=config.input.worker_count)
    side = height // config.input.downsample
    self._example = {"video": jax.ShapeDtypeStruct((1, spec["num_steps"], spec["frames_per_step"], side, side, 3),
                                                   jnp.uint8),
                     "current": jax.ShapeDtypeStruct((1, spec["num_steps"], 2 * spec["step_seconds"], 3), jnp.float32)}

  @classmethod
  def prepare(cls, config: ml_collections.ConfigDict) -> "Task":
    """The task with its data prepared (`task.prepare_data`) and, with `input.current_shift_from`, the
    shift read from that align run: the I/O before the task is built."""
    return cls(config, task.prepare_data(config), current_shift(config.input))

  # ------------------------------------------------------------------------------ batches

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    dataset = pipeline.make_dataset(self.data.recordings, self.data.split("train"), sample_kind="sequence",
                                    batch_size=host_batch, sample_spec=self.inputs["spec"], seed=seed,
                                    start_batch=start_step, worker_count=self.config.input.worker_count)
    return ({"video": b["video"], "current": b["current"], "labels": b["labels"]} for b in dataset)

  # ------------------------------------------------------------------------------ model

  def init(self, rng: jax.Array) -> dict:
    model_rng, _ = jax.random.split(rng)
    example = {k: jnp.zeros(v.shape, v.dtype) for k, v in self._example.items()}
    return self.eval_model.init(model_rng, **example)

  def init_aux(self, rng: jax.Array) -> dict:
    """The CLUB nets of both modalities and their Adam states; with H-DCID also level 2's (`level2`) and the
    step counter (`step`) that switches level 2 on."""
    _, club_rng = jax.random.split(rng)
    aux = self.init_club(club_rng)
    if self.levels == 2:
      aux.update(level2=self.init_club(jax.random.fold_in(club_rng, 2)), step=jnp.zeros((), jnp.int32))
    return aux

  def init_club(self, rng: jax.Array) -> dict:
    """A CLUB net per modality (q(specific | quantized)) and its Adam state."""
    x = jnp.zeros((1, self.config.model.dim))
    params = {m: self.club_net.init(k, x)["params"] for m, k in zip(MODALITIES, jax.random.split(rng))}
    return {"params": params, "opt_state": {m: self.club_tx.init(params[m]) for m in params}}

  def fit_club(self, aux: dict, outputs: dict, rng: jax.Array, on: jax.Array | None = None) -> tuple[dict, dict]:
    """(aux with each modality's CLUB net fitted on the features of `outputs` (either level's), its bounds and
    fitting NLLs). With `on` (a traced bool) the nets are fitted only where it is true, else kept as they are
    (their NLL logged unfitted)."""
    fitted = {"params": {}, "opt_state": {}}
    logged = {}
    for m, key in zip(MODALITIES, jax.random.split(rng)):
      x = outputs[f"quantized_{m}"].reshape(-1, self.config.model.dim)
      y = outputs[f"specific_{m}"].reshape(-1, self.config.model.specific_dim)
      fit = functools.partial(club.fit, self.club_net, aux["params"][m], aux["opt_state"][m], self.club_tx, x, y,
                              self.config.club.steps, axis_name=AXIS)
      keep = functools.partial(self.keep_club, aux["params"][m], aux["opt_state"][m], x, y)
      params, opt_state, nll = fit() if on is None else jax.lax.cond(on, fit, keep)
      fitted["params"][m], fitted["opt_state"][m] = params, opt_state
      logged[f"club_{m}"] = club.upper_bound(self.club_net, params, x, y, key, axis_name=AXIS)
      logged[f"club_nll_{m}"] = nll
    return {**aux, **fitted}, logged

  def keep_club(self, params, opt_state, x: jax.Array, y: jax.Array) -> tuple:
    """`club.fit`'s result for a net left unfitted: (params, opt_state, its NLL on the stop-gradient x, y)."""
    x, y = jax.lax.stop_gradient(x.astype(jnp.float32)), jax.lax.stop_gradient(y.astype(jnp.float32))
    return params, opt_state, club.nll(self.club_net, params, x, y)

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
    if self.levels == 2:
      total, aux = self.add_level2(total, logged, outputs["level2"], aux, batch, jax.random.fold_in(club_rng, 2))
    return total, (logged, dict(updated), aux)

  def add_level2(self, total: jax.Array, logged: dict, outputs: dict, aux: dict, batch: dict,
                 rng: jax.Array) -> tuple[jax.Array, dict]:
    """(L1 + weight·L2 once `aux["step"]` has reached the warm-up, else L1 (level 2's gradient then 0); aux with
    the level-2 CLUB nets fitted from `club_from` on and the step counted). Logs level 2's terms as `l2_<name>`,
    `perplexity2`, `code_agreement2` and `level2_on` into `logged`."""
    settings, step = self.config.hdcid, aux["step"]
    aux = dict(aux)
    if "club" in objective.active(settings.loss):
      aux["level2"], outputs["club"] = self.fit_club(aux["level2"], outputs, rng, on=step >= self.club_from)
    level2, terms = objective.weighted_sum(LEVEL2_TERMS, settings.loss, outputs, batch)
    on = step >= self.warmup
    total = total + jnp.where(on, settings.weight, 0.0) * level2
    logged.update({f"l2_{k}": v for k, v in terms.items()})
    logged.update(l2_commitment=outputs["commitment"], perplexity2=vq.perplexity(outputs["code_use"]),
                  code_agreement2=jnp.mean(outputs["codes_video"] == outputs["codes_current"]),
                  level2_on=on.astype(jnp.float32), loss=total)
    aux["step"] = step + 1
    return total, aux

  # ------------------------------------------------------------------------------ for evaluators

  def encode(self, variables: dict, batch: dict) -> dict[str, jax.Array]:
    """Codes (B, L) of both modalities and each sequence's reconstruction errors; with H-DCID also level 2's
    (`codes2_<m>`, `recon2_<m>`)."""
    out = self.eval_model.apply(variables, video=batch["video"], current=batch["current"])
    encoded = {k: out[k] for k in ("codes_video", "codes_current", "recon_video", "recon_current")}
    if "level2" in out:
      encoded.update({f"{k}2_{m}": out["level2"][f"{k}_{m}"] for k in ("codes", "recon") for m in MODALITIES})
    return encoded

  def encode_current(self, variables: dict, current: jax.Array) -> tuple:
    """The current encoder's output for (B, L, rows, 3) sequences; its first element the codes (B, L)."""
    return self.eval_model.apply(variables, "current", current, method="encode")

  @staticmethod
  def codebook(variables: dict) -> jax.Array:
    """The shared codebook's vectors (K, D) (level 1's with H-DCID)."""
    return variables[vq.COLLECTION]["codebook"]["embedding"]

  @staticmethod
  def codebooks(variables: dict) -> tuple[jax.Array, ...]:
    """Each level's codebook vectors (K_l, D): (level 1,) for Uni-Code, (level 1, level 2) for H-DCID."""
    books = variables[vq.COLLECTION]
    return tuple(books[name]["embedding"] for name in ("codebook", "codebook2") if name in books)

  def predict_fns(self) -> dict:
    """`encode`, `encode_current`, `codebook`, `codebooks`, and `init` (rng -> the variables of a never-trained
    model)."""
    return {"encode": self.encode, "encode_current": self.encode_current, "codebook": self.codebook,
            "codebooks": self.codebooks, "init": self.init}
