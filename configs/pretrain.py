"""Uni-Code pretraining, the main job: video and current on one shared VQ codebook.

    python launch/main.py --config=configs/pretrain.py                 # laptop-sized default (CPU: minutes)
    python launch/main.py --config=configs/pretrain.py:full            # paper-scale settings, for accelerators
    python launch/main.py --config=configs/pretrain.py:tiny            # seconds-long smoke run (tests)

Switch a loss term off with its weight, e.g. `--config.loss.cpc=0` (the ablation runner does this),
or use plain EMA instead of MM-EMA with `--config.model.ema_cross_weight=0`.
"""

import ml_collections

from configs import common
from fmjax.train import optim

VARIANTS = ("full", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "pretrain")
  config = ml_collections.ConfigDict()
  config.job = "pretrain"
  config.seed = 0
  config.parallel = "shard_map"   # or 'pmap'
  config.data = common.data_config()
  # L steps of step_seconds; per step frames_per_step frames block-averaged by `downsample`.
  config.input = dict(num_steps=10, step_seconds=2, frames_per_step=1, downsample=4, batch_size=32,
                      worker_count=0)
  config.model = dict(dim=256, specific_dim=64, depth=2, heads=4, num_codes=400, decay=0.99, epsilon=1e-5,
                      ema_cross_weight=0.5, commitment_cost=0.25, reset_after=300, init_scale=1.0,
                      cpc_context=256, cpc_steps=(1,), cpc_same_weight=0.1)
  # Weights of the loss terms; 0 switches a term off.
  config.loss = dict(recon=1.0, commitment=1.0, cpc=1.0, club=0.1, code_matching=0.5)
  config.club = dict(hidden=128, steps=5, lr=1e-3)  # the variational net's own optimiser
  config.optimizer = optim.default_config(lr=1e-3, warmup_steps=50)
  config.num_train_steps = 1000
  config.log_every = 50
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  # Evaluation: every `stride`-th test sequence; the zero-shot probe fits a linear head on one
  # modality's code vectors from `probe_train` training sequences and tests it on the other's.
  # The code agreement is tested against `agreement_permutations` re-pairings of the sequences (0: off).
  config.eval = dict(split="test", batch_size=64, stride=4, probe_train=2048, probe_steps=300,
                     agreement_permutations=1000)
  config.init_from = ""
  config.eval_only = False
  config.restart = False   # True: move the workdir's checkpoints aside and train from step 0

  if "full" in variants:
    config.input.update(frames_per_step=2, downsample=2, batch_size=256)
    config.model.update(reset_after=300)
    config.num_train_steps = 20000
    config.log_every = 100
    config.checkpoint_every = 2000
    config.eval.update(stride=1, probe_train=16384, probe_steps=1000)
  if "tiny" in variants:
    config.data = common.get_config("tiny")
    config.input.update(num_steps=4, step_seconds=2, downsample=4, batch_size=8)
    config.model.update(dim=16, specific_dim=8, depth=1, heads=2, num_codes=16, reset_after=2, cpc_context=16)
    config.club.update(hidden=16, steps=2)
    config.optimizer.warmup_steps = 2
    config.num_train_steps = 6
    config.log_every = 2
    config.checkpoint_every = 3
    config.eval.update(batch_size=16, stride=10, probe_train=64, probe_steps=20)
  config.lock()
  return config
