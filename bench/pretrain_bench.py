"""Speed and memory of the default Uni-Code pretraining step (configs/pretrain.py), as JSON.

    python bench/pretrain_bench.py [--config=configs/pretrain.py[:variant]] [--steps 30]

Three timings of `--steps` steps each, after warm-up, on the default synthetic furnace (generated and
prepared first if needed): the input pipeline alone (host batches), the compiled step alone (one
batch already on the devices, reused), and the two together as the training loop runs them. The
input share is input / (input + compute); `overlap` says how much of the input time the loop's
background prefetch hides (1 = all); `loop_over_compute` is the loop's rate over the compiled step's
(issue 17's target: at least 0.9). Peak RSS is the process's high-water mark after the runs.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import pretrain
from fmjax.runtime import memory, parallel
from fmjax.train import optim, step
from fmjax.train.tasks import pretrain as pretrain_task


def _timed(fn, steps: int) -> float:
  start = time.perf_counter()
  fn(steps)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variant", default="", help="configs/pretrain.py variant, e.g. 'full'")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()
  config = pretrain.get_config(args.variant)
  task = pretrain_task.Task.prepare(config)
  par = parallel.DataParallel(config.parallel)
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  host_batch = config.input.batch_size // jax.process_count()
  state = par.put_state(step.create_train_state(task, tx, jax.random.PRNGKey(0)))
  train_step = step.make_train_step(task, tx, lr, config.seed, par)
  holder = {"state": state}

  def input_only(n):
    host = task.train_batches(host_batch, 1, 0)
    for _ in range(n):
      next(host)

  fixed = next(par.batches(task.train_batches(host_batch, 2, 0)))

  def compute_only(n):
    for _ in range(n):
      holder["state"], metrics = train_step(holder["state"], fixed)
    jax.block_until_ready(metrics)

  def together(n):
    batches = par.batches(task.train_batches(host_batch, 3, 0))
    for _ in range(n):
      holder["state"], metrics = train_step(holder["state"], next(batches))
    jax.block_until_ready(metrics)

  for fn in (input_only, compute_only, together):
    fn(args.warmup)
  t_input, t_compute, t_loop = (_timed(fn, args.steps) for fn in (input_only, compute_only, together))
  hidden = (t_input + t_compute - t_loop) / t_input if t_input else 1.0
  print(json.dumps({
      "machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind} x{par.num_devices}",
      "jax": jax.__version__, "config": f"configs/pretrain.py{':' + args.variant if args.variant else ''}",
      "batch": config.input.batch_size, "steps": args.steps,
      "loop_steps_per_s": args.steps / t_loop, "compute_steps_per_s": args.steps / t_compute,
      "input_batches_per_s": args.steps / t_input, "loop_over_compute": t_compute / t_loop,
      "input_share": t_input / (t_input + t_compute), "overlap": float(np.clip(hidden, 0, 1)),
      "peak_rss_mb": memory.peak_rss_mb(),
  }, indent=1))


if __name__ == "__main__":
  main()
