"""Cross-modal zero-shot transfer from a Uni-Code pretrain run.

    python launch/main.py --config=configs/transfer.py --config.init_from=runs/pretrain
    python launch/main.py --config=configs/transfer.py:tiny --config.init_from=DIR   # tests
    python launch/main.py --config=configs/transfer.py --config.init_from=runs/pretrain \
        --config.evals.warning.fmformer_from=runs/fmformer_current   # + a supervised current-only model

Restores the pretrain run's encoders and codebook (architecture from its saved config), freezes
them, fits linear heads on one modality's code vectors and tests them on the other (V->C, C->V),
beside the labelled-modality upper bounds and a never-trained model.
"""

import ml_collections

from configs import common

VARIANTS = ("tiny",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "transfer")
  # The model is the pretrain run's (one of fmjax's own), or the module --config.model_name names.
  config = common.trainer_config("transfer")
  config.eval_only = True    # nothing is trained: the weights come from init_from
  config.num_train_steps = 0
  # The probes (every metric) and the early warning, each also on the TOC dimensions, with more training
  # sequences and head steps than the pretrain job's (configs/common.py EVALUATIONS says what each means).
  config.evals = dict(probes=common.evaluation("probes", stride_s=1.0, train_sequences=4096, head_steps=500,
                                               toc_dims=128),
                      warning=common.evaluation("warning", train_sequences=4096, head_steps=500, toc_dims=128))
  if "tiny" in variants:
    common.tiny(config)
    config.num_train_steps = 0
    config.evals.probes.toc_dims = config.evals.warning.toc_dims = 8
  config.lock()
  return config
