"""A tiny recording whose every value can be computed by hand.

12 frames of 6x8 (H x W, non-square so transposes show), two frames per second, video starting 3 s
after the current: frame k is at second 3 + k // 2. Pixel (k, h, w, c) = (7k + 3h + 5w + c) % 256.
Current: 10 seconds, 20 rows, row r = 6000 + [r, 100 + r, 200 + r]. Frames 8..11 are abnormal, with a
single mask pixel at (h=1, w=2).
"""

import numpy as np

from fmjax.data import fmf_format

T, H, W = 12, 6, 8


def pixel_value(k, h, w, c):
  return (7 * k + 3 * h + 5 * w + c) % 256


def recording(name: str = "hand") -> fmf_format.Recording:
  k, h, w, c = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), np.arange(3), indexing="ij")
  masks = np.zeros((T, H, W), np.uint8)
  masks[8:, 1, 2] = 1
  rows = np.arange(20)
  return fmf_format.Recording(
      name=name, frames=pixel_value(k, h, w, c).astype(np.uint8), masks=masks,
      labels=(np.arange(T) >= 8).astype(np.int32), frame_seconds=3 + np.arange(T) // 2,
      current=(6000 + np.stack([rows, 100 + rows, 200 + rows], 1)).astype(np.float32),
      current_seconds=np.repeat(np.arange(10), 2), start_time=np.datetime64("2023-05-10 21:33:27"))


def write_root(root: str, names=("hand",)) -> str:
  for name in names:
    fmf_format.write_recording(root, recording(name))
  fmf_format.write_splits(root, {"train": {n: range(0, 8) for n in names}, "test": {n: range(8, 12) for n in names}})
  return root
