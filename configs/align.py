"""Contrastive alignment of video and current windows, and the lead-time search on the test events.

    python launch/main.py --config=configs/align.py                   # laptop-sized default (CPU: minutes)
    python launch/main.py --config=configs/align.py:lag0              # ablation: InfoNCE at lag 0 only
    python launch/main.py --config=configs/align.py:tiny              # seconds-long smoke run (tests)
    python launch/main.py --config=configs/align.py:alignvsr          # + AlignVSR's global and local alignment
    python launch/main.py --config=configs/align.py:meanframes        # a video step: the mean of 10 frames
    python launch/main.py --config=configs/align.py --config.data.synthetic.lead_min_s=60 \
        --config.data.synthetic.lead_max_s=120                        # another furnace, same code

A video window of `window_steps` steps is matched with the current windows of the same length that
end 0 .. `max_lag_steps` steps earlier (MIL-NCE: the true lag is unknown in training). Evaluation
puts each test event's visual onset in the middle of a video window, searches every lag, and compares
the best one -- under a prior over lags learned from the training split's visual onsets -- with the
furnace's true lead, beside a hand-crafted cross-correlation baseline.
"""

import ml_collections

from configs import common
from fmjax.train import optim

VARIANTS = ("lag0", "alignvsr", "meanframes", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.variants(arg, VARIANTS, "align")
  config = common.trainer_config("align", model_name="align")
  # Steps of step_seconds; a video step is frames_per_step frames block-averaged by `downsample`.
  # Candidate lags for MIL-NCE: 0, lag_stride, ... up to max_lag_steps (the search tries every step).
  # onset_share: the share of training windows that contain a visual onset (by the video labels).
  config.input.update(window_steps=50, step_seconds=2, frames_per_step=1, downsample=4, max_lag_steps=200,
                      lag_stride=1, onset_share=0.5)
  # Window encoders (fmjax.models.align): 'steps' keeps one small feature vector per step, so the
  # cosine of two windows compares them position by position; 'flat' and 'transformer' mix positions.
  config.model = dict(dim=128, embed_dim=64, depth=2, heads=4, video_temporal="steps", current_temporal="steps",
                      step_dim=8, init_temperature=0.1, dtype="float32",  # dtype: of the matmuls (e.g. bfloat16)
                      attention="auto",  # the attention kernel: CPU's on a CPU, XLA's elsewhere (models.attention)
                      video_frames="stack")  # a step's frames_per_step frames stacked on channels, or 'mean'ed
  config.loss = dict(mil_nce=1.0, supervised=1.0)   # weights of fmjax.train.tasks.align.LOSS_TERMS
  # The contrast: hard_negative_lags are far-away current windows of the same recording (in steps
  # before the video window's end) used as extra negatives; lag0: InfoNCE at lag 0 instead of MIL-NCE.
  config.contrast = dict(hard_negative_lags=(300, 350), lag0=False)
  config.optimizer = optim.default_config(lr=1e-3, warmup_steps=50)
  config.num_train_steps = 2000
  config.evals = dict(lead_time=common.evaluation("lead_time"))  # settings: configs/common.py EVALUATIONS

  if "lag0" in variants:
    config.contrast.lag0 = True
  if "alignvsr" in variants:
    # AlignVSR (arXiv 2410.16438): video steps attend over the current's units (model.cross_alignment),
    # the attended units under the label-based contrast, and each step's attention tied to the units
    # within local_radius steps of its own shifted by the lag (radius 1: AlignVSR's 3-unit window).
    # The weights are not tuned; AlignVSR weighs its local loss 8 against its label losses' 1.
    config.model.cross_alignment = True
    config.loss.update(global_supervised=1.0, local=1.0)
    config.contrast.local_radius = 1
  if "meanframes" in variants:
    # A video step is the mean of 10 frames spread over its seconds (at 25 fps one in 5; at 2 fps each of
    # its 4 frames, weighted by the rounding), not its first frame alone (frames_per_step=1).
    config.input.frames_per_step = 10
    config.model.video_frames = "mean"
  if "tiny" in variants:
    common.tiny(config)
    config.data.synthetic.update(lead_min_s=20.0, lead_max_s=40.0, anomaly_min_s=40.0, anomaly_max_s=80.0,
                                 min_gap_s=30.0)
    config.input.update(window_steps=8, max_lag_steps=30, lag_stride=3)
    config.model.update(dim=16, embed_dim=8, depth=1, heads=2, step_dim=4)
    config.contrast.hard_negative_lags = (40,)
    config.evals.lead_time.batch_size = 8  # after the overlay's 16
  config.lock()
  return config
