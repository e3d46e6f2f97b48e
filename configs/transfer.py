"""Cross-modal zero-shot transfer from a Uni-Code pretrain run.

    python launch/main.py --config=configs/transfer.py --config.init_from=runs/pretrain
    python launch/main.py --config=configs/transfer.py:tiny --config.init_from=DIR   # tests

Restores the pretrain run's encoders and codebook (architecture from its saved config), freezes
them, fits linear heads on one modality's code vectors and tests them on the other (V->C, C->V),
beside the labelled-modality upper bounds and a never-trained model.
"""

import ml_collections

from configs import common

VARIANTS = ("tiny",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "transfer")
  config = ml_collections.ConfigDict()
  config.job = "transfer"
  config.seed = 0
  config.data = common.data_config()   # must give frames of the size the pretrain run saw
  config.init_from = ""                # the pretrain run's workdir (required)
  config.head_steps = 500              # full-batch Adam steps of each linear head
  # Heads are fitted on `train_sequences` training sequences spread over the split; tested on every
  # `stride`-th test sequence.
  config.eval = dict(split="test", stride=2, train_sequences=4096, batch_size=64)
  if "tiny" in variants:
    config.data = common.get_config("tiny")
    config.head_steps = 20
    config.eval.update(stride=10, train_sequences=64, batch_size=16)
  config.lock()
  return config
