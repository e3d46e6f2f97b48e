r"""Data-layer throughput, printed as one JSON object.

  python bench/data_bench.py [--recordings 1] [--seconds 8] [--workers 0,2]

Measures, side by side in one run on this machine: synthetic generation (frames/s), TFDS preparation
into array_record (frames/s), and the grain pipeline's FmFormer clips (batch 32, 10 frames 64x64,
240 current rows) per second with each worker count: the median of three timed windows after warm-up.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time

from fmjax.data import pipeline, synthetic, tfds_fmf
from fmjax.runtime import exits


def clips_per_second(prepared, workers: int, seconds: float, batch_size: int = 32) -> float:
  ds = pipeline.make_dataset(prepared.recordings, prepared.split("train"), sample_kind="clip", batch_size=batch_size,
                             seed=0, worker_count=workers, read_threads=1,
                             sample_spec=dict(num_frames=10, sampling_rate=1, current_seconds=120))
  it = iter(ds)
  for _ in range(5):  # warm-up: workers started, buffers filled
    batch = next(it)
  assert batch["video"].shape == (batch_size, 10, 64, 64, 3) and batch["current"].shape == (batch_size, 240, 3)
  rates = []
  for _ in range(3):
    start, clips = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 3:
      next(it)
      clips += batch_size
    rates.append(clips / (time.perf_counter() - start))
  it.close()
  return statistics.median(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recordings", type=int, default=1)
  parser.add_argument("--seconds", type=float, default=9.0, help="timed seconds per pipeline setting")
  parser.add_argument("--workers", default="0,2", help="comma-separated grain worker counts to compare")
  args = parser.parse_args()
  cfg = dataclasses.replace(synthetic.SyntheticConfig(), recordings=args.recordings)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    results = synthetic.generate(os.path.join(tmp, "root"), cfg)
    gen_s = time.perf_counter() - start
    frames = sum(r["frames"] for r in results)
    start = time.perf_counter()
    prepared = tfds_fmf.load(os.path.join(tmp, "root"), os.path.join(tmp, "data"))
    prep_s = time.perf_counter() - start
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "frames": frames, "image": cfg.image_size,
        "synthetic_frames_per_s": round(frames / gen_s),
        "prepare_frames_per_s": round(frames / prep_s),
        "prepared_bytes_per_frame": round(tfds_fmf.storage_bytes(prepared) / frames),
        "raw_bytes_per_frame": cfg.image_size ** 2 * 4,
    }
    for workers in (int(w) for w in args.workers.split(",")):
      out[f"clips_per_s_workers_{workers}"] = round(clips_per_second(prepared, workers, args.seconds))
  print(json.dumps(out))


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
