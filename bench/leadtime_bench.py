"""Lags/s of the vmapped lead-time search vs a Python loop over offsets, as JSON.

    python bench/leadtime_bench.py [--max_lag 2000] [--events 1] [--chunk 0] [--repeats 15]

One long current history (random amperes, `max_lag` + window steps) and one video window per event,
the aligner of `configs/align.py` with random weights. The vmapped search (`fmjax.analysis.lag_search.search`,
jitted, warm) embeds every current window in one call (with the default 'steps' encoder, from
per-step features computed once over the history); the loop calls the jitted current encoder once
per window and takes the cosine on the host. Both give the same similarity curve (asserted). Times
are medians of `--repeats` (a warm search takes milliseconds: a few repeats are noisy).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import align as align_config
from fmjax.analysis import lag_search
from fmjax.models import align
from fmjax.runtime import registry


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--max_lag", type=int, default=2000, help="lags searched (steps)")
  parser.add_argument("--events", type=int, default=1)
  parser.add_argument("--chunk", type=int, default=0, help="lags per lax.map chunk (0: all at once)")
  parser.add_argument("--repeats", type=int, default=15)
  args = parser.parse_args()
  config = align_config.get_config()
  inputs = config.input
  side = 64 // inputs.downsample
  rows = 2 * inputs.step_seconds
  window = inputs.window_steps
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 255, (args.events, window, inputs.frames_per_step, side, side, 3), np.uint8))
  history = jnp.asarray(rng.normal(10000, 1500, (args.events, args.max_lag + window, rows, 3)), jnp.float32)
  model = registry.find(config.model_name, "Model")(**config.model)
  variables = model.init(jax.random.key(0), video=video[:1], current=history[:1, None, :window])
  apply_fn = align.embed_fn(model)

  pool_steps = align.unit_per_step if config.model.current_temporal == "steps" else None

  def vmapped():
    out = lag_search.search(apply_fn, variables, video, history, window=window, max_lag=args.max_lag,
                          step_seconds=inputs.step_seconds, chunk=args.chunk, pool_steps=pool_steps)
    return jax.block_until_ready(out.similarity)

  embed = jax.jit(apply_fn, static_argnums=1)

  def looped():
    curves = []
    for e in range(args.events):
      v = np.asarray(embed(variables, "video", video[e:e + 1]))[0]
      curve = []
      for lag in range(args.max_lag + 1):
        end = history.shape[1] - lag
        c = np.asarray(embed(variables, "current", history[e:e + 1, end - window:end]))[0]
        curve.append(float(v @ c / (np.linalg.norm(v) * np.linalg.norm(c))))
      curves.append(curve)
    return np.array(curves)

  fast, slow = vmapped(), looped()  # warm-up (compilation), and the numbers must agree
  np.testing.assert_allclose(np.asarray(fast), slow, atol=1e-4)
  t_fast, t_slow = _median_time(vmapped, args.repeats), _median_time(looped, args.repeats)
  lags = args.events * (args.max_lag + 1)
  print(json.dumps({
      "machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}",
      "jax": jax.__version__, "window_steps": window, "lags_per_event": args.max_lag + 1, "events": args.events,
      "chunk": args.chunk, "factorised": pool_steps is not None, "vmapped_lags_per_s": lags / t_fast,
      "loop_lags_per_s": lags / t_slow,
      "speedup": t_slow / t_fast, "max_abs_diff": float(np.max(np.abs(np.asarray(fast) - slow))),
  }, indent=1))


if __name__ == "__main__":
  main()
