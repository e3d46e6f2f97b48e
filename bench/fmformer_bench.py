"""FmFormer training and inference throughput (clips/s), optionally beside the official PyTorch code.

    python bench/fmformer_bench.py                                    # fmjax only
    python bench/fmformer_bench.py --torch-ref ../FMF-Benchmark       # + the official model, fairly
    python bench/fmformer_bench.py --torch-ref ../FMF-Benchmark --same-process   # the old method
    python bench/fmformer_bench.py --torch-ref ../FMF-Benchmark --host-devices=1,2  # + fmjax on 2 CPU devices

The official configuration (cross-modal classification, 64x64x10 clips, 240 current rows, dim 96,
depth 6) at batch 32 on random inputs. A training step is the whole update: forward, backward and
AdamW (fmjax: the FmFormer task's loss in `step.make_train_step`, shard_map on one device; PyTorch:
CrossEntropyLoss + AdamW). By default each implementation is timed in a fresh interpreter of its own
(`--impl`), `--runs` times, interleaved fmjax, torch, fmjax, ... (`bench/separate.py`); each run's
figure is the median of its `--rounds` timed steps, and the JSON gives every run's figures, their
medians and the ratios. `--same-process` times both in one process, round by round (the method of
the first figures in bench/RESULTS.md: PyTorch's threads then slow fmjax down). `--host-devices`
runs get the XLA flags that importing fmjax gives several forced CPU devices (`fmjax.runtime.compat`: no
intra-op pool, unless XLA_FLAGS sets `xla_cpu_multi_thread_eigen` itself), as the launcher's do.
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import separate

from configs import fmformer as fmformer_config
from fmjax.runtime import parallel
from fmjax.train import optim, step
from fmjax.train.tasks import fmformer as fmformer_task

OFFICIAL_KWARGS = dict(image_size=64, image_patch_size=8, frames=10, frame_patch_size=2, num_classes=2,
                       current_patches=240, current_patch_dim=3, dim=96, depth=6, heads=3, mlp_dim=384,
                       pool="cls", channels=3, dim_head=32, dropout=0.0, emb_dropout=0.0,
                       task="classification", additional=True)


def jax_runners(batch: dict, dtype: str = "float32", flops: dict | None = None):
  """(train_step, infer) closures for fmjax, each running one batch to completion: the FmFormer task's
  own loss in the trainer's own step (`step.make_train_step`), as `launch/main.py` runs them, data-parallel
  over all devices (one, unless XLA_FLAGS forces more host devices: `--host-devices`). `dtype`: the
  model's compute dtype; `flops`, if given, gets each compiled program's FLOPs per call (XLA's count; the
  closures then run those compiled programs, so nothing is compiled twice)."""
  config = fmformer_config.get_config()
  config.model.dtype = dtype
  task = fmformer_task.Task(config, None)  # no data: the batches are random
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  par = parallel.DataParallel("shard_map", jax.devices())
  state = step.create_train_state(task, tx, jax.random.PRNGKey(0))
  variables = par.put_state(jax.tree.map(jnp.copy, state.variables()))
  train_step = step.make_train_step(task, tx, lr, config.seed, par)
  device_batch = jax.device_put(batch, par.sharded)
  holder = {"state": par.put_state(state)}
  forward = par.wrap(lambda v, b: task.model.apply(v, video=b["video"], current=b["current"]),
                     (parallel.REPLICATED, parallel.SHARDED), parallel.SHARDED)

  if flops is not None:
    train_step = train_step.lower(holder["state"], device_batch).compile()
    forward = forward.lower(variables, device_batch).compile()
    flops["train"], flops["infer"] = flops_of(train_step), flops_of(forward)

  def train():
    holder["state"], metrics = train_step(holder["state"], device_batch)
    jax.block_until_ready(metrics)

  def infer():
    jax.block_until_ready(forward(variables, device_batch))

  return train, infer


def flops_of(compiled) -> float | None:
  """XLA's FLOP count of one call of a compiled program, per device (None where the backend gives none)."""
  costs = compiled.cost_analysis()
  costs = costs[0] if isinstance(costs, (list, tuple)) else costs  # a list of one in older jax
  return float(costs["flops"]) if costs and costs.get("flops", -1) > 0 else None


def _official_module(checkout: str, name: str):
  """Imports FMF/models/<name>.py alone: the package __init__ pulls in fvcore, which the models never use."""
  import importlib
  import types

  root = os.path.join(os.path.abspath(checkout), "FMF")
  if not os.path.isfile(os.path.join(root, "models", f"{name}.py")):
    raise SystemExit(f"error: {checkout}: no FMF/models/{name}.py; expected a checkout of FMF-Benchmark")
  for package, path in (("FMF", root), ("FMF.models", os.path.join(root, "models"))):
    if package not in sys.modules:
      module = types.ModuleType(package)
      module.__path__ = [path]
      sys.modules[package] = module
  return importlib.import_module(f"FMF.models.{name}")


def torch_runners(batch: dict, checkout: str, device: str = "cpu", dtype: str = "float32"):
  """(train_step, infer) closures for the official PyTorch model from a checkout of its repository, on
  `device` ('cpu' or 'cuda'); dtype 'bfloat16' runs it under autocast, as mixed-precision PyTorch code does."""
  import contextlib

  import torch

  ViTForViCu = _official_module(checkout, "VitForViCu").ViTForViCu

  torch.set_num_threads(os.cpu_count())
  model = ViTForViCu(**OFFICIAL_KWARGS).to(device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
  criterion = torch.nn.CrossEntropyLoss()
  video = torch.from_numpy(batch["video"].astype(np.float32)).permute(0, 4, 1, 2, 3).contiguous().to(device)
  current = torch.from_numpy(batch["current"]).to(device)
  label = torch.from_numpy(batch["label"]).long().to(device)
  cast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
  done = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train():
    model.train()
    optimizer.zero_grad()
    with cast():
      loss = criterion(model(video, current), label)
    loss.backward()
    optimizer.step()
    done()

  def infer():
    model.eval()
    with torch.no_grad(), cast():
      model(video, current)
    done()

  return train, infer


def measure(runners: dict, batch_size: int, rounds: int, warmup: int) -> dict:
  times = {name: [] for name in runners}
  for name, fn in runners.items():
    for _ in range(warmup):
      fn()
  for _ in range(rounds):
    for name, fn in runners.items():  # interleaved: noise hits every implementation alike
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: batch_size / float(np.median(t)) for name, t in times.items()}


def random_batch(size: int) -> dict:
  rng = np.random.default_rng(0)
  return {"video": rng.integers(0, 256, (size, 10, 64, 64, 3)).astype(np.uint8),
          "current": (rng.normal(size=(size, 240, 3)) * 1000).astype(np.float32),
          "label": rng.integers(0, 2, size).astype(np.int32)}


def measure_in_process(impls: list[str], args) -> dict:
  """Figures of `impls` timed in this process, round by round."""
  batch = random_batch(args.batch)
  make = {"fmjax": lambda: jax_runners(batch), "torch": lambda: torch_runners(batch, args.torch_ref)}
  runners = {impl: make[impl]() for impl in impls}
  return {"train_clips_per_s": measure({k: v[0] for k, v in runners.items()}, args.batch, args.rounds, args.warmup),
          "infer_clips_per_s": measure({k: v[1] for k, v in runners.items()}, args.batch, args.rounds, args.warmup)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch-ref", default="", help="checkout of the official FMF-Benchmark repository")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5, help="timed steps per run (their median is the run's)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--runs", type=int, default=5, help="separate processes per implementation, interleaved")
  parser.add_argument("--impl", choices=("fmjax", "torch"), help="time this one alone here (one run) and exit")
  parser.add_argument("--host-devices", default="1", help="fmjax on N forced CPU host devices, data-parallel "
                      "(XLA_FLAGS); a comma-separated list times each, e.g. 1,2 (fmjax, fmjax_x2)")
  parser.add_argument("--same-process", action="store_true", help="time both in this process (the old method)")
  args = parser.parse_args()
  impls = ["fmjax", "torch"] if args.torch_ref else ["fmjax"]
  result = {"machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}",
            "jax": jax.__version__, "batch": args.batch, "rounds": args.rounds}
  if args.impl:  # one run of one implementation: the line the orchestrator reads
    figures = measure_in_process([args.impl], args)
    print(json.dumps({kind: rates[args.impl] for kind, rates in figures.items()}))
    return
  if args.same_process:
    result.update(method="one process, implementations alternating round by round", **measure_in_process(impls, args))
  else:
    base = [sys.executable, os.path.abspath(__file__), f"--batch={args.batch}", f"--rounds={args.rounds}",
            f"--warmup={args.warmup}", f"--torch-ref={args.torch_ref}"]
    commands, envs = {}, {}
    for n in (int(v) for v in args.host_devices.split(",")):
      name = "fmjax" if n == 1 else f"fmjax_x{n}"
      commands[name] = [*base, "--impl=fmjax"]
      forced = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
      envs[name] = {**os.environ, "XLA_FLAGS": forced}  # the run's import of fmjax adds the launcher's flags
    if args.torch_ref:
      commands["torch"], envs["torch"] = [*base, "--impl=torch"], dict(os.environ)
    impls = list(commands)
    runs = separate.interleaved(commands, args.runs, envs=envs)
    middle = separate.medians(runs, ["train_clips_per_s", "infer_clips_per_s"])
    result.update(method=f"a fresh process per run, {args.runs} runs each, interleaved", runs=runs,
                  train_clips_per_s={i: middle[i]["train_clips_per_s"] for i in impls},
                  infer_clips_per_s={i: middle[i]["infer_clips_per_s"] for i in impls})
  if args.torch_ref:
    import torch
    result["torch"] = torch.__version__
    for kind in ("train", "infer"):
      rates = result[f"{kind}_clips_per_s"]
      for impl in (i for i in rates if i.startswith("fmjax")):
        result[f"{kind}_ratio_{impl}_over_torch"] = rates[impl] / rates["torch"]
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
