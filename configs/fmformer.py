"""FmFormer anomaly detection (the FMF benchmark's model), trained from scratch and evaluated.

    python launch/main.py --config=configs/fmformer.py --workdir=runs/fmformer          # cross-modal, clip labels
    python launch/main.py --config=configs/fmformer.py:seg --workdir=runs/fmformer_seg  # pixel masks
    python launch/main.py --config=configs/fmformer.py:video     # video-only baseline
    python launch/main.py --config=configs/fmformer.py:current   # current-only baseline
    python launch/main.py --config=configs/fmformer.py:accel     # for accelerators: bfloat16 matmuls
    python launch/main.py --config=configs/fmformer.py:tiny      # seconds-long smoke run (tests)

Variants combine with commas, e.g. `:video,seg`, `:current,tiny` or `:seg,accel`. `accel` computes
the matmuls and convolutions in bfloat16 (`model.dtype`); parameters, optimiser state, losses and
metrics stay float32. Evaluate a finished run or
converted official weights without training:
    python launch/main.py --config=configs/fmformer.py --config.eval_only=True --config.init_from=DIR \
        --config.input.official_layout=True   # for converted official weights only
"""

import ml_collections

from configs import common

VARIANTS = ("seg", "video", "current", "accel", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "fmformer")
  config = common.trainer_config("fmformer", model_name="fmformer")
  config.input = dict(num_frames=10, sampling_rate=1, current_seconds=120, batch_size=32, worker_count=0,
                      official_layout=False)  # True: frames in h5py's [W, H] order, as official weights expect
  # fmjax.models.fmformer.Model: variant 'cross' (video + current), 'video' or 'current'; the clip
  # geometry follows config.input. bn_axis_name: the segmentation head's BatchNorm averages over devices.
  # attention: the kernel, "auto" (the CPU one on a CPU, XLA's fused one elsewhere), "cpu_chunked" or "xla".
  config.model = dict(variant="cross", task="classification", image_size=64, patch_size=8, frame_patch=2, dim=96,
                      depth=6, heads=3, head_dim=32, mlp_dim=384, num_classes=2, dilated=True, pool="cls",
                      positions="learned", dtype="float32", bn_axis_name="data", attention="auto",
                      frames=config.input.get_ref("num_frames"),
                      current_len=config.input.get_ref("current_seconds") * 2)
  config.loss = dict(cross_entropy=1.0)
  config.optimizer.update(lr=5e-4, warmup_steps=50)
  config.num_train_steps = 600
  config.log_every = 20
  config.checkpoint_every = 200
  config.keep_checkpoints = 3
  config.evals = dict(classification=common.evaluation("classification"))  # settings: common.EVALUATIONS

  if "seg" in variants:
    config.model.task = "segmentation"
  if "video" in variants:
    config.model.variant = "video"
  if "current" in variants:
    config.model.variant = "current"
  if "accel" in variants:
    config.model.dtype = "bfloat16"
  if "tiny" in variants:
    common.tiny(config)
    config.input.update(num_frames=4, current_seconds=8)
    config.model.update(image_size=32, dim=16, depth=1, heads=2, head_dim=8, mlp_dim=32)
    config.evals.classification.stride = 25
  config.lock()
  return config
