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
  config = common.trainer_config("transfer")   # the model comes from the pretrain run's config
  config.eval_only = True    # nothing is trained: the weights come from init_from
  config.num_train_steps = 0
  # Heads are fitted on `train_sequences` training sequences spread over the split, `head_steps`
  # full-batch Adam steps each; tested on a test sequence every `stride_s` seconds. toc_dims: the heads are also
  # fitted on that many codebook dimensions chosen by training-free codebook optimisation (0: off).
  config.evals = dict(probes=dict(type="probes", split="test", stride_s=1.0, train_sequences=4096, head_steps=500,
                                  batch_size=64, prefix="", metrics=(), toc_dims=128))
  # The early warning (fmjax.evals.warning): the V->C head over whole current streams as alarms, by a rule
  # fitted on the training split (the score averaged over one of smooth_steps, chosen by leaving each
  # training recording out, and the lowest threshold with at most false_per_h false alarms per hour
  # there), beside the hand-crafted unsteadiness detector, and with fmformer_from=<workdir of a
  # configs/fmformer.py:current run> beside that supervised current-only model.
  config.evals.warning = dict(type="warning", split="test", train_sequences=4096, head_steps=500, batch_size=64,
                              smooth_steps=(5, 15, 30, 60, 90), false_per_h=1.0, confirm_s=400.0, before_s=60.0,
                              fmformer_from="")
  if "tiny" in variants:
    common.tiny(config)
    config.num_train_steps = 0
    config.evals.probes.update(stride_s=10.0, train_sequences=64, head_steps=20, batch_size=16, toc_dims=8)
    config.evals.warning.update(train_sequences=64, head_steps=20, batch_size=16)
  config.lock()
  return config
