"""Uni-Code pretraining as a training task: sequences, the weighted loss, and the codebook evaluation.

The loop (fmjax.train.loop) owns devices, optimiser, checkpoints and logging. Besides the model's
parameters this task keeps two non-parameter states in `model_state`: the codebook (`vq_ema`,
updated by MM-EMA inside the step) and the CLUB variational nets with their own Adam state (`club`,
fitted for `config.club.steps` inner steps per train step on stop-gradient features).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fmjax import console, errors, metrics, probe
from fmjax.data import pipeline, tfds_fmf
from fmjax.models import club, unicode, vq
from fmjax.train.parallel import AXIS

MODALITIES = unicode.MODALITIES
_MODEL_FIELDS = ("dim", "specific_dim", "depth", "heads", "num_codes", "decay", "epsilon", "ema_cross_weight",
                 "commitment_cost", "reset_after", "init_scale", "cpc_context", "cpc_same_weight")


def build_model(config: ml_collections.ConfigDict, image_size: int, axis_name: str | None = None) -> unicode.UniCode:
  """The UniCode model of `config.model`; decoder sizes follow the step geometry of `config.input`."""
  i = config.input
  if image_size % i.downsample:
    raise errors.ConfigError(f"input.downsample={i.downsample} does not divide the frames' size {image_size}")
  side = image_size // i.downsample
  return unicode.UniCode(**{k: config.model[k] for k in _MODEL_FIELDS}, cpc_steps=tuple(config.model.cpc_steps),
                         video_size=i.frames_per_step * side * side * 3, current_size=2 * i.step_seconds * 3,
                         axis_name=axis_name)


class PretrainTask:
  """Everything job-specific about Uni-Code pretraining."""
  curve_keys = ("loss", "recon_video", "recon_current", "perplexity", "code_agreement", "cpc_acc_v2c", "lr")

  def __init__(self, config: ml_collections.ConfigDict, data: tfds_fmf.PreparedFmf | None = None):
    self.config = config
    self.data = data or tfds_fmf.load_from_config(config.data)
    height, width = self.data.recordings[0].image_shape
    if height != width:
      raise errors.ConfigError(f"Uni-Code needs square frames; the data's are {height}x{width}")
    self.model = build_model(config, height, axis_name=AXIS)
    self.eval_model = build_model(config, height)
    self.club_net = club.Variational(config.model.specific_dim, config.club.hidden)
    self.club_tx = optax.adam(config.club.lr)
    i = config.input
    self.window = dict(num_steps=i.num_steps, step_seconds=i.step_seconds, frames_per_step=i.frames_per_step,
                       downsample_factor=i.downsample)

  # ------------------------------------------------------------------------------ batches

  def _dataset(self, split_frames: np.ndarray, batch: int, **kwargs):
    return pipeline.make_dataset(self.data.recordings, split_frames, kind="sequence", batch_size=batch,
                                 window=self.window, worker_count=self.config.input.worker_count, **kwargs)

  @staticmethod
  def _fields(batch: dict) -> dict:
    return {"video": batch["video"], "current": batch["current"], "labels": batch["labels"]}

  def train_batches(self, host_batch: int, seed: int, start_step: int) -> Iterator[dict]:
    """This host's training batches from global step `start_step` on (same order as a fresh run)."""
    dataset = self._dataset(self.data.split("train"), host_batch, seed=seed, start_batch=start_step)
    return map(self._fields, dataset)

  def sequences(self, split: str, stride: int, limit: int = 0, batch: int = 64) -> Iterator[dict]:
    """Every `stride`-th sequence of a split in order (at most `limit`), in batches of up to `batch`."""
    frames = pipeline.split_samples(self.data.recordings, self.data.split(split), "sequence", **self.window)
    frames = frames[::stride]
    frames = frames[:limit] if limit else frames
    return map(self._fields, self._dataset(frames, batch, shuffle=False, num_epochs=1, drop_remainder=False))

  # ------------------------------------------------------------------------------ model

  def init(self, rng: jax.Array, batch: dict) -> dict:
    model_rng, club_rng = jax.random.split(rng)
    variables = self.eval_model.init(model_rng, batch["video"], batch["current"])
    x = jnp.zeros((1, self.config.model.dim))
    params = {m: self.club_net.init(k, x)["params"] for m, k in zip(MODALITIES, jax.random.split(club_rng))}
    return {**variables, "club": {"params": params, "opt_state": {m: self.club_tx.init(params[m]) for m in params}}}

  def loss(self, params, model_state: dict, batch: dict, rng: jax.Array) -> tuple[jax.Array, tuple[dict, dict]]:
    """The weighted Uni-Code loss of this device's shard; updates the codebook and fits the CLUB nets."""
    w = self.config.loss
    codebook_rng, club_rng = jax.random.split(rng)
    out, updated = self.model.apply({"params": params, vq.COLLECTION: model_state[vq.COLLECTION]},
                                    batch["video"], batch["current"], update=True, mutable=[vq.COLLECTION],
                                    rngs={"codebook": codebook_rng}, cpc=w.cpc > 0)
    metrics = {"commitment": out["commitment"], "perplexity": vq.perplexity(out["code_use"]),  # already global
               "code_agreement": jnp.mean(out["codes_video"] == out["codes_current"])}
    total = w.commitment * out["commitment"]
    for m in MODALITIES:
      metrics[f"recon_{m}"] = out[f"recon_{m}"].mean()
      total += w.recon * metrics[f"recon_{m}"]
    if w.cpc > 0:
      metrics.update(cpc=out["cpc"], cpc_acc_v2c=out["cpc_acc_v2c"], cpc_acc_c2v=out["cpc_acc_c2v"])
      total += w.cpc * out["cpc"]
    if w.code_matching > 0:
      metrics["code_matching"] = vq.code_matching_loss(out["distances_video"], out["distances_current"], AXIS)
      total += w.code_matching * metrics["code_matching"]
    club_state = model_state["club"]
    if w.club > 0:
      club_state = {"params": {}, "opt_state": {}}
      for m, key in zip(MODALITIES, jax.random.split(club_rng)):
        x = out[f"quantized_{m}"].reshape(-1, self.config.model.dim)
        y = out[f"specific_{m}"].reshape(-1, self.config.model.specific_dim)
        fitted, opt_state, nll = club.fit(self.club_net, model_state["club"]["params"][m],
                                          model_state["club"]["opt_state"][m], self.club_tx, x, y,
                                          self.config.club.steps, axis_name=AXIS)
        club_state["params"][m], club_state["opt_state"][m] = fitted, opt_state
        metrics[f"club_{m}"] = club.upper_bound(self.club_net, fitted, x, y, key, axis_name=AXIS)
        metrics[f"club_nll_{m}"] = nll
        total += w.club * metrics[f"club_{m}"]
    metrics["loss"] = total
    return total, (metrics, {**updated, "club": club_state})

  # ------------------------------------------------------------------------------ evaluation

  def encode(self, variables: dict, batches: Iterator[dict]) -> dict[str, np.ndarray]:
    """Codes (N, L) of both modalities, per-sequence reconstruction errors and step labels of a split."""
    apply = jax.jit(lambda v, video, current: self.eval_model.apply(v, video, current, cpc=False))
    keep = ("codes_video", "codes_current", "recon_video", "recon_current")
    parts = []
    for batch in console.bar(batches, phase="evaluating: encoding", unit="batch"):
      out = apply(variables, batch["video"], batch["current"])
      parts.append({**{k: np.asarray(out[k]) for k in keep}, "labels": batch["labels"]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def evaluate(self, par, state) -> tuple[dict[str, Any], dict]:
    """Codebook use and agreement, reconstruction, and the zero-shot probes beside an untrained model's."""
    e = self.config.eval
    test_batches = read_batches(self.sequences(e.split, e.stride, batch=e.batch_size))
    train_stride = max(1, len(self.data.split("train")) // e.probe_train)
    train_batches = read_batches(self.sequences("train", train_stride, limit=e.probe_train, batch=e.batch_size))
    variables = _frozen(jax.device_get(par.get_state(state).variables()))
    test = self.encode(variables, test_batches)
    use = {m: np.bincount(test[f"codes_{m}"].ravel(), minlength=self.config.model.num_codes) for m in MODALITIES}
    share = {m: use[m] / use[m].sum() for m in MODALITIES}
    summary = {
        "perplexity": float(vq.perplexity(jnp.asarray(use["video"] + use["current"]))),
        "perplexity_video": float(vq.perplexity(jnp.asarray(use["video"]))),
        "perplexity_current": float(vq.perplexity(jnp.asarray(use["current"]))),
        "codes_used": int(np.count_nonzero(use["video"] + use["current"])),
        "code_agreement": float(np.mean(test["codes_video"] == test["codes_current"])),
        "code_agreement_chance": float(np.sum(share["video"] * share["current"])),
        **agreement_significance(test, e.agreement_permutations, self.config.seed),
        "recon_video": float(test["recon_video"].mean()), "recon_current": float(test["recon_current"].mean()),
        "eval_sequences": int(len(test["labels"])), "abnormal_share": float(test["labels"].mean()),
    }
    steps = e.probe_steps
    probes = cross_modal_probes(variables, self.encode(variables, train_batches), test, steps)
    summary.update({f"probe_{pair}_acc": m["acc"] for pair, m in probes.items()})
    # The same probes on a model that was never trained (same seed): what pretraining adds.
    example = jax.tree.map(lambda x: x[:1], train_batches[0])
    untrained = _frozen(jax.device_get(jax.jit(self.init)(jax.random.PRNGKey(self.config.seed), example)))
    baseline = cross_modal_probes(untrained, self.encode(untrained, train_batches),
                                  self.encode(untrained, test_batches), steps)
    summary.update({f"baseline_probe_{pair}_acc": baseline[pair]["acc"] for pair in ("v2c", "c2v")})
    return summary, {"use": use}

  def add_report_sections(self, page, summary: dict, samples: dict) -> None:
    """Codebook usage per modality, most used codes first."""
    order = np.argsort(-(samples["use"]["video"] + samples["use"]["current"]))
    for m in MODALITIES:
      page.add_bars(f"Codebook usage, {m} (test split; codes by overall use)", samples["use"][m][order],
                    "code (by overall use)", "steps")



def read_batches(batches: Iterator[dict]) -> list[dict]:
  """All batches of an evaluation split in memory, with a bar while they are read."""
  return list(console.bar(batches, phase="evaluating: reading", unit="batch"))


def cross_modal_probes(variables: dict, train: dict, test: dict, steps: int) -> dict[str, dict[str, float]]:
  """Official metrics of linear heads on code vectors, fitted on one modality's training steps and
  tested on each modality's test steps: pairs 'v2c', 'c2v' (zero-shot) and 'v2v', 'c2c' (labelled modality).

  `train` and `test` hold `codes_video`, `codes_current` (N, L) and step `labels` (N, L).
  """
  embedding = np.asarray(variables[vq.COLLECTION]["codebook"]["embedding"])
  out = {}
  for source in MODALITIES:
    head = probe.fit(jnp.asarray(embedding[train[f"codes_{source}"].ravel()]),
                     jnp.asarray(train["labels"].ravel()), steps=steps)
    for target in MODALITIES:
      predictions = probe.predict(head, jnp.asarray(embedding[test[f"codes_{target}"].ravel()]))
      confusion = metrics.confusion_matrix(predictions, jnp.asarray(test["labels"].ravel()))
      out[f"{source[0]}2{target[0]}"] = metrics.classification_metrics(confusion)
  return out


def agreement_significance(codes: dict, permutations: int, seed: int) -> dict[str, float]:
  """`code_agreement_z` and `code_agreement_p` of `vq.agreement_test` (video sequences paired with
  other sequences' current as the null): how clearly the agreement is above chance."""
  if permutations <= 0:
    return {}
  test = vq.agreement_test(jnp.asarray(codes["codes_video"]), jnp.asarray(codes["codes_current"]),
                           jax.random.PRNGKey(seed), permutations=permutations)
  return {"code_agreement_z": float(test["z"]), "code_agreement_p": float(test["p"])}


def _frozen(variables: dict) -> dict:
  """The model's variables without the CLUB nets (which only training uses)."""
  return {k: v for k, v in variables.items() if k != "club"}
