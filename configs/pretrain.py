"""Uni-Code pretraining, the main job: video and current on one shared VQ codebook.

    python launch/main.py --config=configs/pretrain.py                 # laptop-sized default (CPU: minutes)
    python launch/main.py --config=configs/pretrain.py:full            # paper-scale, for accelerators (bfloat16)
    python launch/main.py --config=configs/pretrain.py:tiny            # seconds-long smoke run (tests)
    python launch/main.py --config=configs/pretrain.py:hdcid           # H-DCID: a second level (also :hdcid,tiny)

Switch a loss term off with its weight, e.g. `--config.loss.cpc=0` (the ablation runner does this),
or use plain EMA instead of MM-EMA with `--config.model.ema_cross_weight=0`.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tiny", "hdcid")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "pretrain")
  config = common.trainer_config("pretrain", model_name="unicode")
  # L steps of step_seconds; per step frames_per_step frames block-averaged by `downsample`.
  # Pairing: each current sequence ends current_shift_s seconds before its video sequence (0: the same
  # time), or by the lead an align run estimated (current_shift_from=<its workdir>: lead_median_est_s).
  config.input = dict(num_steps=10, step_seconds=2, frames_per_step=1, downsample=4, batch_size=32,
                      worker_count=0, current_shift_s=0, current_shift_from="")
  config.model = dict(dim=256, specific_dim=64, depth=2, heads=4, num_codes=400, decay=0.99, epsilon=1e-5,
                      ema_cross_weight=0.5, commitment_cost=0.25, reset_after=300, init_scale=1.0,
                      cpc_context=256, cpc_steps=(1,), cpc_same_weight=0.1,
                      dtype="float32",  # compute dtype of the matmuls; params, codebook and losses stay float32
                      attention="auto")  # the attention kernel: CPU's on a CPU, XLA's elsewhere (models.attention)
  # Weights of the loss terms (fmjax.train.tasks.pretrain.LOSS_TERMS); 0 switches a term off.
  config.loss = dict(recon=1.0, commitment=1.0, cpc=1.0, club=0.1, code_matching=0.5)
  config.club = dict(hidden=128, steps=5, lr=1e-3)  # the variational nets' own optimiser
  config.optimizer.update(lr=1e-3, warmup_steps=50)
  config.num_train_steps = 1000
  config.log_every = 50
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  # Codebook use and agreement, the zero-shot probes (the transfer job's evaluator, fewer metrics kept) and
  # the early warning from the current (configs/common.py EVALUATIONS says what each setting means).
  config.evals = dict(codebook=common.evaluation("codebook"),
                      probes=common.evaluation("probes", metrics=("acc", "bacc", "f1")),
                      warning=common.evaluation("warning"))

  if "full" in variants:
    config.input.update(frames_per_step=2, downsample=2, batch_size=256)
    config.model.update(reset_after=300, dtype="bfloat16")
    config.num_train_steps = 20000
    config.log_every = 100
    config.checkpoint_every = 2000
    config.evals.codebook.update(stride_s=0.0)
    config.evals.probes.update(stride_s=0.0, train_sequences=16384, head_steps=1000)
    config.evals.warning.update(train_sequences=16384, head_steps=1000)
  if "tiny" in variants:
    common.tiny(config)
    config.input.update(num_steps=4, step_seconds=2, downsample=4)
    config.model.update(dim=16, specific_dim=8, depth=1, heads=2, num_codes=16, reset_after=2, cpc_context=16)
    config.club.update(hidden=16, steps=2)
  if "hdcid" in variants:  # after full/tiny, so that their sizes and step counts hold
    hdcid(config, tiny="tiny" in variants)
  config.lock()
  return config


def hdcid(config: ml_collections.ConfigDict, tiny: bool) -> None:
  """H-DCID (fmjax.models.hdcid): level 2 on the level-1 specific features, with its own codebook of
  `model.num_codes2` codes (12 in tiny, unlike level 1's 16, so that tests tell them apart). The loss is
  L1 + `hdcid.weight`·L2 from step round(`warmup_fraction`·num_train_steps) on, and the level-2 CLUB nets are
  fitted from round(`club_from_fraction`·num_train_steps) on (official: 3 of 5 epochs for both,
  TOC_H-DCID code/src/pretrain_ml.py:561-568, 608-611): fractions, so that `--config.num_train_steps=...` keeps
  the split. `hdcid.loss` weighs level 2's terms as `loss` weighs level 1's (no code matching at level 2)."""
  config.model_name = "hdcid"
  config.model.num_codes2 = 12 if tiny else 400
  config.hdcid = dict(weight=0.3, warmup_fraction=0.6, club_from_fraction=0.6,
                      loss=dict(recon=1.0, commitment=1.0, cpc=1.0, club=0.1))
