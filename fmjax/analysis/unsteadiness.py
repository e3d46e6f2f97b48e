"""The hand-crafted lead-time baseline: the lag at which the current's steadiness correlates best
with the video's hotness (no learning; the lead-time evaluation reports it beside the aligner's).

Inputs are numpy arrays of the evaluation's windows: video (N, W, F, H, W', 3) uint8 and the whole
current (N, H + W, R, 3), its last step aligned with the video window's last step.
"""

from __future__ import annotations

import numpy as np


def steadiness(current: np.ndarray, smooth_steps: int) -> np.ndarray:
  """(N, T) per step: minus the std of the step's rows (mean over phases), smoothed over steps."""
  per_step = -np.asarray(current, np.float64).std(axis=2).mean(axis=-1)
  kernel = np.ones(smooth_steps) / smooth_steps
  return np.stack([np.convolve(s, kernel, mode="same") for s in per_step])


def hotness(video: np.ndarray) -> np.ndarray:
  """(N, W) per step: the 99th percentile over pixels of red minus blue (the spot is red to white, the
  shell grey), averaged over the step's frames."""
  frames = np.asarray(video, np.float32)
  heat = frames[..., 0] - frames[..., 2]
  return np.percentile(heat.reshape(*heat.shape[:3], -1), 99, axis=-1).mean(-1)


def baseline_leads(video: np.ndarray, current: np.ndarray, window: int, max_lag: int, step_seconds: float,
                   smooth_steps: int) -> np.ndarray:
  """(N,) the hand-crafted lead in seconds: the lag (0 .. max_lag steps) whose `window`-step stretch
  of current steadiness correlates best with the video window's hotness."""
  hot = hotness(video)                                          # (N, W)
  steady = steadiness(current, smooth_steps)                    # (N, H + W)
  lags = np.arange(max_lag + 1)
  starts = steady.shape[1] - window - lags                      # (L,)
  windows = steady[:, starts[:, None] + np.arange(window)]      # (N, L, W)
  hot_centred = hot - hot.mean(-1, keepdims=True)
  steady_centred = windows - windows.mean(-1, keepdims=True)
  norms = np.linalg.norm(hot_centred, axis=-1)[:, None] * np.linalg.norm(steady_centred, axis=-1)
  corr = np.einsum("nw,nlw->nl", hot_centred, steady_centred) / np.maximum(norms, 1e-12)
  return lags[np.argmax(corr, -1)] * step_seconds
