r"""Every job at the real benchmark's size, as JSON: preparation, FmFormer, Uni-Code pretrain + transfer, align.

  python launch/data.py synth --preset=pixel-level --out ROOT        # 270,000 frames, 3 x 1 h at 25 fps
  python bench/scale_bench.py --root ROOT --out BENCH [--jobs prepare,fmformer,pretrain,transfer,align]

Each job runs as a user runs it (`launch/data.py prepare`, `launch/main.py --config=configs/<job>.py
--config.data.root=ROOT`), in its own process, with short step counts (`--steps job=N,...`). For each:
the wall time, the peak RSS the process reports (`fmjax.runtime.memory`: its own high-water mark; a child's
rusage would also count this bench's memory at the fork), the disk it added (its workdir; for
prepare, the prepared records), and from its summary the first step's time and the evaluation's
figures.

For a training job the bench then puts, side by side in this process on the same machine, the
compiled step alone (the trainer's `make_train_step` on one batch already on the device) and the
input pipeline alone (the task's `train_batches`, as the loop reads them), and compares the loop's
rate (the run's own `clips_per_s` records, the first log window, which holds compilation, left out)
with the step's: `loop_over_step` (target >= 0.9) and `input_share = 1 - loop_over_step`, the share
of a step the loop spends on anything but the compiled step.

FmFormer's full test split (every test frame a clip, the official protocol) would take about an hour on
2 cores; the bench evaluates `--eval_clips` clips spread over it and reports the rate and the projected
time of the whole split.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

JOBS = ("prepare", "fmformer", "pretrain", "transfer", "align")
STEPS = {"fmformer": 20, "pretrain": 100, "align": 100}


def run_process(args: list[str], log: str) -> dict:
  """Runs `args` (output to `log`), returning its wall time; a failure stops the bench with the log's tail."""
  start = time.perf_counter()
  with open(log, "w") as out:
    status = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
  if status:
    with open(log) as f:
      tail = f.read()[-2000:]
    raise SystemExit(f"error: {' '.join(args[1:3])} failed with status {status} (log {log}):\n{tail}")
  return {"wall_s": round(time.perf_counter() - start, 1)}


def disk_mb(path: str) -> float:
  total = 0
  for folder, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if not os.path.islink(os.path.join(folder, f)))
  return round(total / 2 ** 20, 1)


def job_config(job: str, root: str, data_dir: str, steps: int, overrides: dict):
  """The job's default config on `root`, with the bench's step count and settings."""
  import importlib
  config = importlib.import_module(f"configs.{job}").get_config()
  config.data.root, config.data.data_dir = root, data_dir
  config.num_train_steps = steps
  config.log_every = max(1, steps // 5)
  config.checkpoint_every = max(steps, 1)
  for key, value in overrides.items():
    node = config
    *parents, name = key.split(".")
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


def flags_of(overrides: dict) -> list[str]:
  return [f"--config.{key}={value}" for key, value in overrides.items()]


def loop_rate(workdir: str, batch: int) -> float | None:
  """Median training steps/s of the run's log windows after the first (which holds compilation)."""
  from fmjax.train import writers
  rates = [r["clips_per_s"] / batch for r in writers.read_metrics(workdir) if r.get("split") == "train"
           and "clips_per_s" in r]
  return statistics.median(rates[1:]) if len(rates) > 1 else None


def step_and_pipeline(config, repeats: int) -> dict:
  """The compiled train step alone (one batch already on the device) and the input pipeline alone."""
  import jax

  from fmjax.train import loop, step

  par, task = loop.devices_and_task(config)
  tx, lr, state = loop.initial_state(config, task)
  state = par.put_state(state)
  train_step = step.make_train_step(task, tx, lr, config.seed, par)
  batches = task.train_batches(config.input.batch_size, config.seed, 0)
  for _ in range(3):  # warm-up: readers started, buffers filled
    host = next(batches)
  start = time.perf_counter()
  for _ in range(repeats):
    host = next(batches)
  pipeline_s = (time.perf_counter() - start) / repeats
  device = next(par.batches(iter([host])))
  for _ in range(2):  # compile, then one more
    state, metrics = train_step(state, device)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = train_step(state, device)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {"step_alone_steps_per_s": round(1 / statistics.median(times), 3),
          "pipeline_alone_s_per_batch": round(pipeline_s, 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True, help="an FMF root, e.g. `synth --preset=pixel-level`'s")
  parser.add_argument("--out", required=True, help="folder for the prepared data, workdirs and logs (made anew)")
  parser.add_argument("--jobs", default=",".join(JOBS))
  parser.add_argument("--steps", default="", help="job=N,... training steps (default fmformer=20, pretrain=100, "
                      "align=100)")
  parser.add_argument("--eval_clips", type=int, default=2048, help="FmFormer test clips evaluated (0: the split)")
  parser.add_argument("--repeats", type=int, default=10, help="timed steps and batches of the side-by-side part")
  args = parser.parse_args()
  root, out = os.path.abspath(args.root), os.path.abspath(args.out)
  steps = dict(STEPS, **{k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(",") if kv)})
  jobs = [j for j in args.jobs.split(",") if j]
  data_dir = os.path.join(out, "data")
  os.makedirs(out, exist_ok=True)
  python = sys.executable
  results = {}

  if "prepare" in jobs:
    shutil.rmtree(data_dir, ignore_errors=True)
    r = run_process([python, "launch/data.py", "prepare", root, "--data_dir", data_dir], f"{out}/prepare.log")
    with open(f"{out}/prepare.log") as f:
      described = json.loads([line for line in f if line.startswith("{")][-1])
    r.update(peak_rss_mb=described["peak_rss_mb"], frames=described["frames"], disk_mb=disk_mb(data_dir),
             frames_per_s=round(described["frames"] / described["seconds"]))
    results["prepare"] = r

  overrides = {
      "fmformer": {"evals.classification.max_clips": args.eval_clips},
      "pretrain": {}, "align": {},
      "transfer": {"init_from": os.path.join(out, "pretrain")},
  }
  for job in (j for j in JOBS[1:] if j in jobs):
    workdir = os.path.join(out, job)
    shutil.rmtree(workdir, ignore_errors=True)
    job_steps = steps.get(job, 0)
    config = job_config(job, root, data_dir, job_steps, overrides[job])
    flags = [f"--config=configs/{job}.py", f"--workdir={workdir}", f"--config.data.root={root}",
             f"--config.data.data_dir={data_dir}", f"--config.num_train_steps={job_steps}",
             f"--config.log_every={config.log_every}", f"--config.checkpoint_every={config.checkpoint_every}",
             *flags_of(overrides[job])]
    before = disk_mb(data_dir)
    r = run_process([python, "launch/main.py", *flags], f"{out}/{job}.log")
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    r.update(peak_rss_mb=summary["peak_rss_mb"], steps=job_steps, workdir_disk_mb=disk_mb(workdir),
             data_disk_added_mb=round(disk_mb(data_dir) - before, 1),
             first_step_s=summary.get("first_step_s"))
    if job_steps:
      rate = loop_rate(workdir, config.input.batch_size)
      r["loop_steps_per_s"] = round(rate, 3) if rate else None
      r.update(step_and_pipeline(config, args.repeats))
      if r["loop_steps_per_s"]:
        r["loop_over_step"] = round(r["loop_steps_per_s"] / r["step_alone_steps_per_s"], 3)
        r["input_share"] = round(max(0.0, 1 - r["loop_over_step"]), 3)
    if job == "fmformer":
      from fmjax.data import tfds_fmf
      test_clips = len(tfds_fmf.load(root, data_dir).split("test"))
      rate = summary["fps"]  # None where one batch was evaluated: its time is mostly compilation
      r.update(eval_clips=summary["eval_clips"], eval_clips_per_s=rate and round(rate, 1), test_clips=test_clips,
               full_test_eval_projected_s=rate and round(test_clips / rate), acc=summary.get("acc"))
    else:
      r.update({k: summary[k] for k in ("perplexity", "c2v_bacc", "v2c_bacc",
                                        "lead_median_abs_err_s", "lead_median_est_s") if k in summary})
    results[job] = r

  import jax
  print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cpu, {jax.devices()[0].device_kind}",
                    "jax": jax.__version__, "root": root, "jobs": results}, indent=1))


if __name__ == "__main__":
  main()
