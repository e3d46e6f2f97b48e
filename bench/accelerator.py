"""Everything worth measuring on an accelerator, in one command that finishes well inside 10 minutes, as one JSON.

    python bench/accelerator.py --torch-ref ../FMF-Benchmark --out accel.json --results bench/RESULTS.md
    python bench/accelerator.py --smoke        # on a CPU in seconds, tiny sizes: the same keys (the suite runs it)

On a GPU machine (an H100 or H200 with jax, flax, optax, orbax and torch installed, fmjax with `pip install -e .`):

- `fmformer`: FmFormer's official configuration, training and inference clips/s at batch 32 and 256, float32 and
  bfloat16 (`model.dtype`), with XLA's FLOP count per step and the model FLOP utilisation against the device's
  peak; beside it, with `--torch-ref` (a checkout of GaochangWu/FMF-Benchmark), the official PyTorch model on
  the same device in the same run (bfloat16: under `torch.autocast`).
- `pretrain`: the trainer's step of `configs/pretrain.py:full` (bfloat16, batch 256): steps/s and utilisation.
- `attention`: the attention implementations side by side (`model.attention`), forward and backward, at
  FmFormer's shapes.
- `jobs`: the notebook's jobs at a shortened length (`loop.train_and_evaluate`: pretrain `:full`, transfer,
  FmFormer `:accel`, align), each one's wall time and figures.

Each timing is the median of `--rounds` calls after `--warmup`. Utilisation is FLOPs per step and device
(XLA's count for the compiled program, which counts a loop's body once: exact for the accelerators' FmFormer,
which has no loop, a lower bound for pretrain's LSTM scans) times steps/s over the peak of `PEAK_FLOPS` for the
device kind (dense bfloat16, or TF32 for float32 on a GPU, whose matmuls JAX runs in TF32 by default; PyTorch
gets TF32 too, for a like-for-like float32); null where the device is not listed. PyTorch runs on CUDA when it
sees a GPU, else on the CPU (each row says which). JAX allocates GPU memory as it needs it here
(XLA_PYTHON_CLIENT_PREALLOCATE=false), so PyTorch has room in the same process. The JSON is rewritten after
each section, so a crash keeps what was measured. With `--results`, a section with the figures is appended.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts: leave PyTorch its memory

import fmformer_bench
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import align as align_config
from configs import fmformer as fmformer_config
from configs import pretrain as pretrain_config
from configs import transfer as transfer_config
from fmjax.models import attention
from fmjax.runtime import exits, parallel
from fmjax.train import loop, optim, step
from fmjax.train.tasks import pretrain as pretrain_task

# Dense peak FLOP/s by device kind: (bfloat16, float32 as JAX runs it by default). Vendor datasheet figures.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": (989e12, 494.5e12),  # SXM; float32: TF32 tensor cores
    "NVIDIA H200": (989e12, 494.5e12),
    "TPU v5 lite": (197e12, 197e12),  # v5e: float32 matmuls run as bfloat16 passes
    "TPU v4": (275e12, 275e12),
}


def median_seconds(fn, rounds: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def utilisation(flops_per_device: float | None, seconds: float, dtype: str) -> float | None:
  """The share of one device's peak that `flops_per_device` every `seconds` is (XLA counts per device)."""
  peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
  if flops_per_device is None or peak is None:
    return None
  return flops_per_device / seconds / peak[0 if dtype == "bfloat16" else 1]


def fmformer(batches: list[int], dtypes: list[str], torch_ref: str, rounds: int, warmup: int) -> list[dict]:
  rows = []
  for size in batches:
    batch = fmformer_bench.random_batch(size)
    for dtype in dtypes:
      flops = {}
      runners = dict(zip(("train", "infer"), fmformer_bench.jax_runners(batch, dtype, flops)))
      row = {"batch": size, "dtype": dtype, "devices": jax.device_count()}
      for kind, fn in runners.items():
        seconds = median_seconds(fn, rounds, warmup)
        row[f"fmjax_{kind}_clips_per_s"] = size / seconds
        row[f"fmjax_{kind}_flops_per_step_and_device"] = flops[kind]
        row[f"fmjax_{kind}_mfu"] = utilisation(flops[kind], seconds, dtype)
      if torch_ref:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as JAX's float32
        row["torch_device"] = device
        for kind, fn in zip(("train", "infer"), fmformer_bench.torch_runners(batch, torch_ref, device, dtype)):
          row[f"torch_{kind}_clips_per_s"] = size / median_seconds(fn, rounds, warmup)
          row[f"{kind}_ratio_fmjax_over_torch"] = row[f"fmjax_{kind}_clips_per_s"] / row[f"torch_{kind}_clips_per_s"]
      rows.append(row)
  return rows


def pretrain(variant: str, rounds: int, warmup: int) -> dict:
  """The trainer's own step of `configs/pretrain.py:<variant>` on the synthetic furnace's first batch."""
  config = pretrain_config.get_config(variant)
  task = pretrain_task.Task.prepare(config)
  par = parallel.DataParallel("shard_map", jax.devices())
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  batch = next(iter(task.train_batches(config.input.batch_size, 0, 0)))
  state = par.put_state(step.create_train_state(task, tx, jax.random.PRNGKey(0)))
  device_batch = jax.device_put(batch, par.sharded)
  train_step = step.make_train_step(task, tx, lr, config.seed, par).lower(state, device_batch).compile()
  flops = fmformer_bench.flops_of(train_step)
  holder = {"state": state}

  def run():
    holder["state"], metrics = train_step(holder["state"], device_batch)
    jax.block_until_ready(metrics)

  seconds = median_seconds(run, rounds, warmup)
  return {"variant": variant, "batch": config.input.batch_size, "dtype": config.model.dtype, "steps_per_s": 1 / seconds,
          "flops_per_step_and_device": flops, "mfu_lower_bound": utilisation(flops, seconds, config.model.dtype)}


def attention_paths(shape: tuple[int, ...], rounds: int, warmup: int) -> list[dict]:
  """Forward and backward of each implementation at (batch, tokens, heads, head_dim), float32 and bfloat16."""
  rows = []
  for dtype in ("float32", "bfloat16"):
    q = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.dtype(dtype))
    for implementation in attention.IMPLEMENTATIONS:
      grad = jax.jit(jax.grad(lambda q, i=implementation: attention.dot_product_attention(q, q, q, i)
                              .astype(jnp.float32).sum()))
      seconds = median_seconds(lambda: jax.block_until_ready(grad(q)), rounds, warmup)
      rows.append({"implementation": implementation, "dtype": dtype, "shape": list(shape),
                   "forward_backward_ms": 1e3 * seconds})
  return rows


def jobs(smoke: bool, steps: dict) -> list[dict]:
  """The notebook's jobs, shortened, in a scratch folder: each one's wall time, steps and key figures."""
  variant = {"pretrain": "tiny" if smoke else "full", "transfer": "tiny" if smoke else "",
             "fmformer": "tiny" if smoke else "accel", "align": "tiny" if smoke else ""}
  keys = {"pretrain": ("perplexity", "c2v_bacc"), "transfer": ("c2v_bacc", "v2c_bacc"),
          "fmformer": ("acc", "f1"), "align": ("lead_mae_s", "events")}
  rows = []
  with tempfile.TemporaryDirectory(prefix="fmjax_accelerator_") as scratch:
    for job, module in (("pretrain", pretrain_config), ("transfer", transfer_config), ("fmformer", fmformer_config),
                        ("align", align_config)):
      config = module.get_config(variant[job])
      if job in steps:
        config.num_train_steps = steps[job]
        config.checkpoint_every = min(config.checkpoint_every, steps[job])
      if job == "transfer":
        config.init_from = os.path.join(scratch, "pretrain")
      start = time.perf_counter()
      summary = loop.train_and_evaluate(config, os.path.join(scratch, job))
      rows.append({"job": job, "variant": variant[job], "steps": summary.get("steps"),
                   "wall_s": time.perf_counter() - start, **{k: summary.get(k) for k in keys[job]}})
  return rows


def markdown(result: dict) -> str:
  """The JSON's figures as a RESULTS.md section."""
  lines = [f"\n### `bench/accelerator.py` on {result['device_kind']} ({result['date']})\n",
           f"jax {result['jax']}, {result['devices']} device(s), {result['machine']}; {result['note']}\n",
           "| FmFormer | batch | dtype | fmjax train clips/s (MFU) | fmjax infer clips/s | torch train | torch infer |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  pct = lambda v: f" ({100 * v:.1f} %)" if v is not None else ""
  num = lambda v: f"{v:.1f}" if isinstance(v, float) else "—"
  for r in result["fmformer"]:
    lines.append(f"| official | {r['batch']} | {r['dtype']} | "
                 f"{num(r['fmjax_train_clips_per_s'])}{pct(r['fmjax_train_mfu'])}"
                 f" | {num(r['fmjax_infer_clips_per_s'])} | {num(r.get('torch_train_clips_per_s'))}"
                 f" | {num(r.get('torch_infer_clips_per_s'))} |")
  p = result["pretrain"]
  lines.append(f"\nPretrain `:{p['variant']}` (batch {p['batch']}, {p['dtype']}): {p['steps_per_s']:.2f} steps/s"
               f"{pct(p['mfu_lower_bound'])}. Attention, forward+backward ms: " + ", ".join(
                   f"{a['implementation']} {a['dtype']} {a['forward_backward_ms']:.2f}" for a in result["attention"]))
  jobs = "; ".join(f"{j['job']} {j['steps']} steps {j['wall_s']:.0f} s" for j in result["jobs"])
  lines.append(f"Jobs: {jobs}\n")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--smoke", action="store_true", help="tiny sizes on any backend, in seconds (the suite's check)")
  parser.add_argument("--torch-ref", default="", help="a checkout of the official FMF-Benchmark (its PyTorch model)")
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--out", default="", help="write the JSON here too")
  parser.add_argument("--results", default="", help="append the figures to this markdown file (bench/RESULTS.md)")
  args = parser.parse_args(argv)
  rounds, warmup = (2, 1) if args.smoke else (args.rounds, args.warmup)
  started = time.perf_counter()
  device = jax.devices()[0]
  result = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cpu",
            "device_kind": device.device_kind, "platform": device.platform, "devices": jax.device_count(),
            "jax": jax.__version__, "optax": optax.__version__, "smoke": args.smoke,
            "note": "smoke sizes: not figures" if args.smoke else "measured"}
  sections = {
      "fmformer": lambda: fmformer([2 * jax.device_count()] if args.smoke else [32, 256], ["float32", "bfloat16"],
                                   args.torch_ref, rounds, warmup),
      "pretrain": lambda: pretrain("tiny" if args.smoke else "full", rounds, warmup),
      "attention": lambda: attention_paths((2, 17, 3, 8) if args.smoke else (32, 401, 3, 32), rounds, warmup),
      "jobs": lambda: jobs(args.smoke, {"pretrain": 2, "fmformer": 2, "align": 2} if args.smoke else
                           {"pretrain": 300, "fmformer": 100, "align": 200})}
  for name, measure in sections.items():
    result[name] = measure()
    result["wall_s"] = time.perf_counter() - started
    if args.out:  # after each section: a later crash keeps these
      with open(args.out, "w", encoding="utf-8") as f:
        f.write(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))
  if args.results:
    with open(args.results, "a", encoding="utf-8") as f:
      f.write(markdown(result))
  return result


if __name__ == "__main__":
  with exits.one_line_errors(os.getcwd()):  # a bad root or a full disk: one line, as the CLI
    main()
