"""FmFormer training and inference throughput (clips/s), optionally beside the official PyTorch code.

    python bench/fmformer_bench.py                                   # fmjax only
    python bench/fmformer_bench.py --torch-ref ../FMF-Benchmark      # + official model, same run

The official configuration (cross-modal classification, 64x64x10 clips, 240 current rows, dim 96,
depth 6) at batch 32 on random inputs. A training step is the whole update: forward, backward and
AdamW (fmjax: the FmFormer task's loss in `step.make_train_step`, shard_map on one device; PyTorch:
CrossEntropyLoss + AdamW). Implementations alternate round by round in one process, so machine
noise hits both alike; medians and ratios are printed as JSON.
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

from configs import fmformer as fmformer_config  # noqa: E402
from fmjax.train import optim, parallel, step  # noqa: E402
from fmjax.train.tasks import fmformer as fmformer_task  # noqa: E402

OFFICIAL_KWARGS = dict(image_size=64, image_patch_size=8, frames=10, frame_patch_size=2, num_classes=2,
                       current_patches=240, current_patch_dim=3, dim=96, depth=6, heads=3, mlp_dim=384,
                       pool="cls", channels=3, dim_head=32, dropout=0.0, emb_dropout=0.0,
                       task="classification", additional=True)


def jax_runners(batch: dict):
  """(train_step, infer) closures for fmjax, each running one batch to completion: the FmFormer task's
  own loss in the trainer's own step (`step.make_train_step`), as `launch/main.py` runs them."""
  config = fmformer_config.get_config()
  task = fmformer_task.Task(config)  # no data is loaded: the batches are random
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  par = parallel.DataParallel("shard_map", jax.devices()[:1])
  example = jax.tree.map(lambda x: x[:1], batch)
  state = step.create_train_state(task, tx, jax.random.PRNGKey(0), example)
  variables = jax.tree.map(jnp.copy, state.variables())
  train_step = step.make_train_step(task, tx, lr, config.seed, par)
  device_batch = jax.device_put(batch, par.sharded)
  holder = {"state": par.put_state(state)}
  forward = jax.jit(lambda v, video, current: task.model.apply(v, video=video, current=current))

  def train():
    holder["state"], metrics = train_step(holder["state"], device_batch)
    jax.block_until_ready(metrics)

  def infer():
    jax.block_until_ready(forward(variables, device_batch["video"], device_batch["current"]))

  return train, infer


def _official_module(checkout: str, name: str):
  """Imports FMF/models/<name>.py alone: the package __init__ pulls in fvcore, which the models never use."""
  import importlib  # pylint: disable=import-outside-toplevel
  import types  # pylint: disable=import-outside-toplevel

  root = os.path.join(os.path.abspath(checkout), "FMF")
  if not os.path.isfile(os.path.join(root, "models", f"{name}.py")):
    raise SystemExit(f"error: {checkout}: no FMF/models/{name}.py; expected a checkout of FMF-Benchmark")
  for package, path in (("FMF", root), ("FMF.models", os.path.join(root, "models"))):
    if package not in sys.modules:
      module = types.ModuleType(package)
      module.__path__ = [path]
      sys.modules[package] = module
  return importlib.import_module(f"FMF.models.{name}")


def torch_runners(batch: dict, checkout: str):
  """(train_step, infer) closures for the official PyTorch model from a checkout of its repository."""
  import torch  # pylint: disable=import-outside-toplevel

  ViTForViCu = _official_module(checkout, "VitForViCu").ViTForViCu

  torch.set_num_threads(os.cpu_count())
  model = ViTForViCu(**OFFICIAL_KWARGS)
  optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
  criterion = torch.nn.CrossEntropyLoss()
  video = torch.from_numpy(batch["video"].astype(np.float32)).permute(0, 4, 1, 2, 3).contiguous()
  current = torch.from_numpy(batch["current"])
  label = torch.from_numpy(batch["label"]).long()

  def train():
    model.train()
    optimizer.zero_grad()
    criterion(model(video, current), label).backward()
    optimizer.step()

  def infer():
    model.eval()
    with torch.no_grad():
      model(video, current)

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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch-ref", default="", help="checkout of the official FMF-Benchmark repository")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  batch = {"video": rng.integers(0, 256, (args.batch, 10, 64, 64, 3)).astype(np.uint8),
           "current": (rng.normal(size=(args.batch, 240, 3)) * 1000).astype(np.float32),
           "label": rng.integers(0, 2, args.batch).astype(np.int32)}
  jax_train, jax_infer = jax_runners(batch)
  train, infer = {"fmjax": jax_train}, {"fmjax": jax_infer}
  if args.torch_ref:
    torch_train, torch_infer = torch_runners(batch, args.torch_ref)
    train["torch"], infer["torch"] = torch_train, torch_infer
  result = {"machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}",
            "jax": jax.__version__, "batch": args.batch, "rounds": args.rounds,
            "train_clips_per_s": measure(train, args.batch, args.rounds, args.warmup),
            "infer_clips_per_s": measure(infer, args.batch, args.rounds, args.warmup)}
  if args.torch_ref:
    import torch  # pylint: disable=import-outside-toplevel
    result["torch"] = torch.__version__
    for kind in ("train", "infer"):
      rates = result[f"{kind}_clips_per_s"]
      result[f"{kind}_ratio_fmjax_over_torch"] = rates["fmjax"] / rates["torch"]
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
