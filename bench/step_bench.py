"""The trainer's step beside a bare jitted step of the same model, loss and optimiser, as JSON.

    python bench/step_bench.py                       # FmFormer, the official configuration (batch 32)
    python bench/step_bench.py --job=pretrain        # the default Uni-Code pretraining step (batch 32)
    python bench/step_bench.py --variants=bare,trainer,bare_shard_map

The bare step is what a user would write by hand: `jax.value_and_grad` of the task's loss, the
optimiser's update and `optax.apply_updates`, jitted with the state donated; no collectives, no guard,
no metrics beyond the loss. Uni-Code's loss uses collectives over the data axis, so for it the bare
step runs under `jax.shard_map` over one device, as the trainer's does. The trainer's step is
`step.make_train_step`, what `launch/main.py` runs. Both run in this process on the same batch
(already on the device), round by round interleaved (each round: `--steps` steps of each variant),
so slow phases of the machine hit both alike. The JSON gives each variant's median step time, the
median over rounds of its time divided by the bare step's in the same round (`ratio_to_bare`), and
the ratio of the medians.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fmjax.runtime import parallel
from fmjax.runtime.parallel import REPLICATED, SHARDED
from fmjax.train import optim, step


def bare_step(task, tx, par: parallel.DataParallel | None):
  """`step(state, batch) -> (state, loss)`: gradient, update, apply; under shard_map when `par` is given."""
  def fn(state, batch):
    (loss, (_, model_state, aux)), grads = jax.value_and_grad(task.loss, has_aux=True)(
        state.params, state.model_state, state.aux, batch, jax.random.key(0))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, model_state=model_state, aux=aux), loss
  if par is None:
    return jax.jit(fn, donate_argnums=(0,))
  return par.wrap(fn, (REPLICATED, SHARDED), (REPLICATED, REPLICATED), donate_argnums=(0,))


def job_setup(job: str, batch_size: int):
  """(task, config, one batch as numpy) of `job` at `batch_size`."""
  if job == "fmformer":
    import fmformer_bench

    from configs import fmformer as fmformer_config
    from fmjax.train.tasks import fmformer as fmformer_task
    config = fmformer_config.get_config()
    return fmformer_task.Task(config, None), config, fmformer_bench.random_batch(batch_size)
  from configs import pretrain
  from fmjax.train.tasks import pretrain as pretrain_task
  config = pretrain.get_config()
  task = pretrain_task.Task.prepare(config)
  return task, config, next(iter(task.train_batches(batch_size, 0, 0)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--job", choices=("fmformer", "pretrain"), default="fmformer")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument("--steps", type=int, default=0, help="steps per variant per round (0: 1 for fmformer, 10 else)")
  parser.add_argument("--warmup", type=int, default=2, help="rounds not counted")
  parser.add_argument("--variants", default="bare,trainer", help="bare, bare_shard_map, trainer (comma-separated)")
  args = parser.parse_args()
  steps = args.steps or (1 if args.job == "fmformer" else 10)
  task, config, batch = job_setup(args.job, args.batch)
  par = parallel.DataParallel("shard_map", jax.devices()[:1])
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  initial = step.create_train_state(task, tx, jax.random.PRNGKey(0))
  device_batch = jax.device_put(batch, par.sharded)
  makers = {"bare": lambda: bare_step(task, tx, None if args.job == "fmformer" else par),
            "bare_shard_map": lambda: bare_step(task, tx, par),
            "trainer": lambda: step.make_train_step(task, tx, lr, config.seed, par)}
  names = args.variants.split(",")
  if names[0] != "bare" or any(n not in makers for n in names):
    raise SystemExit(f"error: --variants={args.variants}: a comma-separated list from {sorted(makers)} "
                     "starting with bare")
  steps_fns = {n: makers[n]() for n in names}
  states = {n: par.put_state(jax.tree.map(np.array, initial)) for n in names}

  def run(name: str) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      states[name], out = steps_fns[name](states[name], device_batch)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps

  times = {n: [] for n in names}
  for round_ in range(args.warmup + args.rounds):
    for n in names:
      t = run(n)
      if round_ >= args.warmup:
        times[n].append(t)
  ratios = {n: float(np.median(np.asarray(times[n]) / np.asarray(times["bare"]))) for n in names}
  print(json.dumps({
      "machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}",
      "jax": jax.__version__, "job": args.job, "batch": args.batch, "rounds": args.rounds, "steps_per_round": steps,
      "median_step_s": {n: float(np.median(t)) for n, t in times.items()},
      "steps_per_s": {n: 1 / float(np.median(t)) for n, t in times.items()},
      "ratio_to_bare": ratios,
      "ratio_of_medians": {n: float(np.median(times[n]) / np.median(times["bare"])) for n in names},
  }, indent=1))


if __name__ == "__main__":
  main()
