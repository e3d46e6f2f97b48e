# ---
# jupyter:
#   accelerator: TPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # fmjax on a Colab TPU: every job, from the synthetic furnace to the lead-time search
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fmjax/fmjax/blob/main/notebooks/colab_tpu.ipynb)
#
# Runtime → Change runtime type → **TPU** (the free tier gives one TPU v5e chip, 16 GB HBM). The notebook
# runs every fmjax job with the same code the command line runs (`fmjax.train.loop.train_and_evaluate`):
# Uni-Code pretraining (the main job), zero-shot cross-modal transfer and the early warning from the
# current, FmFormer anomaly detection, and the aligner with its lead-time search. It also runs on a GPU
# or, slowly, on a CPU. Each job writes its workdir (checkpoints, `summary.json`, `report.md` and its
# figures, TensorBoard files) under `WORKDIR`.
#
# This file is generated from `notebooks/colab_tpu.py` (jupytext, percent format), which is what the
# repository reviews and tests: edit that and run `jupytext --sync notebooks/colab_tpu.py`.

# %% [markdown]
# ## 1. Install fmjax (Colab only)
#
# Clones fmjax (`FMJAX_GIT` at `FMJAX_REF`: a branch, tag or commit) and installs it, with TensorBoard where
# the runtime lacks it (`notebooks/colab_install.py`). Colab's preinstalled packages stay as they are, jax,
# jaxlib, libtpu and the CUDA plugin above all: pip first resolves the install with them pinned, without
# doing it, and if the install would change any of them the cell stops with one `error:` line and installs
# nothing, since a jax that no longer matches the runtime's accelerator backend cannot be repaired by a
# restart. Running the cell again (another `FMJAX_REF`) keeps what the runtime held before the first run.
# The clone also holds the `configs/` the jobs read. Outside Colab (and in CI) this cell does nothing:
# install fmjax yourself (`pip install -e .` in a clone) and start the notebook inside the clone.

# %% tags=["skip-execution"]
FMJAX_GIT = "https://github.com/fmjax/fmjax.git"
FMJAX_REF = "main"

import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  clone = "/content/fmjax"
  if not os.path.isdir(clone):
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", FMJAX_GIT, clone], check=True)
  if subprocess.run(["git", "-C", clone, "fetch", "--quiet", FMJAX_GIT, FMJAX_REF]).returncode == 0:
    subprocess.run(["git", "-C", clone, "checkout", "--quiet", "FETCH_HEAD"], check=True)
  else:  # an abbreviated commit: fetch everything, then let git find it
    subprocess.run(["git", "-C", clone, "fetch", "--quiet", "--tags", FMJAX_GIT, "+refs/heads/*:refs/remotes/fmjax/*"],
                   check=True)
    subprocess.run(["git", "-C", clone, "checkout", "--quiet", FMJAX_REF], check=True)
  spec = importlib.util.spec_from_file_location("colab_install", f"{clone}/notebooks/colab_install.py")
  colab_install = importlib.util.module_from_spec(spec)  # this checkout's, also when the cell runs again
  spec.loader.exec_module(colab_install)
  print(colab_install.install_clone(clone, record="/content/.fmjax_preinstalled.json"))

# %% [markdown]
# ## 2. Settings, devices and the mesh
#
# `FMJAX_NOTEBOOK_SMOKE=1` in the environment switches every job to its tiny config and a scratch
# workdir, so the whole notebook runs on a CPU in a few minutes (CI runs it that way). Otherwise the
# jobs use their accelerator variants with the step counts below (cut to fit a Colab session; `None`:
# the config's own). Expect one line per device; on a runtime without an accelerator a warning says so,
# and everything still runs, slowly.

# %%
import os
import pathlib
import sys
import tempfile

SMOKE = os.environ.get("FMJAX_NOTEBOOK_SMOKE", "") == "1"


def find_repository() -> pathlib.Path:
  """The fmjax clone whose configs/ the jobs read: this folder or one above it, or Colab's clone."""
  here = pathlib.Path.cwd()
  for base in (here, *here.parents, pathlib.Path("/content/fmjax")):
    if (base / "configs" / "pretrain.py").is_file():
      return base
  raise RuntimeError("no fmjax clone found: run the install cell (Colab), or start the notebook inside a clone")


REPOSITORY = find_repository()
sys.path.insert(0, str(REPOSITORY))
WORKDIR = pathlib.Path(tempfile.mkdtemp(prefix="fmjax_notebook_")) if SMOKE else pathlib.Path("/content/runs")
VARIANT = {"pretrain": "tiny" if SMOKE else "full", "transfer": "tiny" if SMOKE else "",
           "fmformer": "tiny" if SMOKE else "accel", "align": "tiny" if SMOKE else ""}
STEPS = {"pretrain": None if SMOKE else 3000, "fmformer": None if SMOKE else 600, "align": None if SMOKE else 2000}
FMF_ROOT = ""       # e.g. "/content/drive/MyDrive/FMFBenchmarkV2/pixel-level": the real benchmark (cell 3)
OFFICIAL_PTH = ""   # e.g. "/content/drive/MyDrive/state_dict_vicu_cls.pth": official FmFormer weights (cell 6)
COPY_TO = ""        # e.g. "/content/drive/MyDrive/fmjax_runs": where cell 8 copies the workdirs

import jax
import numpy as np
from IPython.display import Image, Markdown, display

import fmjax  # noqa: F401  # its version workarounds (fmjax.runtime.compat) apply before JAX computes anything

devices = jax.devices()
host_memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"jax {jax.__version__}, platform {devices[0].platform}, {jax.device_count()} device(s), "
      f"{jax.process_count()} process(es), host memory {host_memory_gb:.0f} GiB")
for device in devices:
  print(f"  {device.id}: {device.device_kind}")
if devices[0].platform == "cpu":
  print("warning: no accelerator on this runtime (Runtime -> Change runtime type -> TPU); it runs on the CPU, slowly")
mesh = jax.make_mesh((jax.device_count(),), ("data",))
print(f"mesh: {dict(mesh.shape)} over all devices (the jobs build the same 1-D data-parallel mesh)")
print(f"workdirs under {WORKDIR}; smoke mode: {SMOKE}")

# %% [markdown]
# ## 3. Data: the synthetic furnace, or the real FMF benchmark from Google Drive
#
# By default every job generates and prepares the synthetic furnace on first use (a few minutes for
# the full-size one; seconds in smoke mode) under `$FMJAX_DATA_DIR` or `~/.cache/fmjax/tfds`. To use
# the real benchmark, copy FMF-Benchmark V2's `pixel-level` folder (with `videos/`, `currents/`,
# `timestamps/`, `train.json`, `test.json`) to your Drive and set `FMF_ROOT` above: this cell mounts
# Drive, validates the folder (one line per recording, or one error naming the bad file) and prepares
# it once. The synthetic furnace's extra ground truth (event onsets, steadiness) is what the lead-time
# and early-warning figures need, so those jobs stay on it.

# %%
from fmjax.data import tfds_fmf, validate


def with_data(config, real: bool = True):
  """`config` on the real benchmark when FMF_ROOT is set (and `real`), else on the synthetic furnace."""
  if FMF_ROOT and real:
    config.data.root = FMF_ROOT
  return config


if FMF_ROOT:
  if FMF_ROOT.startswith("/content/drive") and "google.colab" in sys.modules:
    from google.colab import drive
    drive.mount("/content/drive")
  for recording in validate.validate_root(FMF_ROOT):
    print(", ".join(f"{k} {v}" for k, v in recording.items()))
  prepared = tfds_fmf.load(FMF_ROOT)
  print(f"prepared {len(prepared.recordings)} recordings from {FMF_ROOT}")
else:
  print("the synthetic furnace (generated and prepared by the first job that needs it)")

# %% [markdown]
# ## 4. Uni-Code pretraining, the main job
#
# Video and current on one shared VQ codebook. The TPU variant (`configs/pretrain.py:full`) computes
# in bfloat16 (parameters, codebook and losses stay float32) with a global batch of 256 sequences; the
# progress bar shows the rate and a steady ETA. Then the report's figures (training curves, codebook
# usage per modality) and the key figures of `summary.json`.

# %%
from configs import align as align_configs
from configs import fmformer, pretrain, transfer
from fmjax.train import loop


def show_figures(workdir: pathlib.Path, *words: str) -> None:
  """The report's figures whose file names contain any of `words` (all of them without words)."""
  for png in sorted((workdir / "report").glob("*.png")):
    if not words or any(w in png.name for w in words):
      display(Markdown(f"**{png.stem[3:].replace('_', ' ')}**"))
      display(Image(filename=str(png)))


def show_table(summary: dict, keys: list[str], title: str) -> None:
  rows = [f"| `{k}` | {summary[k]:.4g} |" if isinstance(summary[k], float) else f"| `{k}` | {summary[k]} |"
          for k in keys if k in summary]
  display(Markdown(f"**{title}**\n\n| figure | value |\n| --- | --- |\n" + "\n".join(rows)))


def cut(config, job: str):
  if STEPS[job]:
    config.num_train_steps = STEPS[job]
    config.checkpoint_every = min(config.checkpoint_every, STEPS[job])
  return config


pretrain_dir = WORKDIR / "pretrain"
pretrain_summary = loop.train_and_evaluate(cut(with_data(pretrain.get_config(VARIANT["pretrain"])), "pretrain"),
                                           str(pretrain_dir))
show_figures(pretrain_dir, "training_curves", "codebook_usage")
show_table(pretrain_summary, ["steps", "wall_s", "perplexity", "codes_used", "code_mi_bits", "code_mi_null_bits",
                              "code_mi_p", "code_mi_truth_bits", "v2c_bacc", "c2v_bacc",
                              "c2c_bacc", "v2v_bacc", "majority_rate"], "Uni-Code pretraining")

# %% [markdown]
# ## 5. Orbax restore: zero-shot transfer and the early warning
#
# The transfer job restores the pretrain run's encoders and codebook from its orbax checkpoint
# (`config.init_from`), fits linear heads on one modality's codes and tests them on the other (V→C,
# C→V) beside the labelled-modality ceilings and a never-trained model. Its early warning runs the
# V→C head, learned from video labels alone, over the current of each test recording: how many events
# it warns of, how long before the camera sees them, and its false alarms per hour, beside a
# hand-crafted steadiness detector.

# %%
transfer_config = with_data(transfer.get_config(VARIANT["transfer"]))
transfer_config.init_from = str(pretrain_dir)
transfer_summary = loop.train_and_evaluate(transfer_config, str(WORKDIR / "transfer"))
show_table(transfer_summary, [f"{model}{level}{pair}_bacc" for model in ("", "baseline_") for level in ("", "seq_")
                              for pair in ("v2c", "c2v", "c2c", "v2v")], "Zero-shot transfer, balanced accuracy")
show_table(transfer_summary, [f"{d}warning_{k}" for d in ("", "baseline_")
                              for k in ("recall", "median_s", "false_per_h")] + ["warning_events"],
           "Early warning from the current")
show_figures(WORKDIR / "transfer", "early_warning")

# %% [markdown]
# ## 6. FmFormer: the cross-modal anomaly classifier, its masks, and the official weights
#
# A short training run of the classifier (video + current), then the pixel-level model, with their
# confusion matrix and predicted vs true masks. With `OFFICIAL_PTH` set (and `pip install torch` for
# reading `.pth` files), the official PyTorch weights are converted and evaluated on the data too
# (`input.official_layout`: the official loader's frame orientation).

# %%
fmformer_dir = WORKDIR / "fmformer"
fmformer_summary = loop.train_and_evaluate(cut(with_data(fmformer.get_config(VARIANT["fmformer"])), "fmformer"),
                                           str(fmformer_dir))
show_table(fmformer_summary, ["steps", "wall_s", "acc", "bacc", "f1", "fdr", "mdr", "acc_heavy_mist"],
           "FmFormer, cross-modal classifier (test split)")
show_figures(fmformer_dir, "confusion")

seg_variant = ",".join(v for v in ("seg", VARIANT["fmformer"]) if v)
seg_config = cut(with_data(fmformer.get_config(seg_variant)), "fmformer")
if not SMOKE:
  seg_config.num_train_steps = max(1, seg_config.num_train_steps // 3)  # the pixel-level model learns fast
segmentation_summary = loop.train_and_evaluate(seg_config, str(WORKDIR / "fmformer_seg"))
show_table(segmentation_summary, ["steps", "miou", "acc", "f1"], "FmFormer, pixel level (test split)")
show_figures(WORKDIR / "fmformer_seg", "mask")

if OFFICIAL_PTH:
  from fmjax.convert import torch_fmformer
  converted = WORKDIR / "official_converted"
  torch_fmformer.main([OFFICIAL_PTH, str(converted)])
  official = with_data(fmformer.get_config(VARIANT["fmformer"]))
  official.update(eval_only=True, init_from=str(converted))
  official.input.official_layout = True
  show_table(loop.train_and_evaluate(official, str(WORKDIR / "official_eval")), ["acc", "f1", "fdr", "mdr"],
             "Official FmFormer weights")

# %% [markdown]
# ## 7. Alignment and the lead-time search
#
# The aligner learns which current windows match a video window (MIL-NCE over every candidate lag).
# Restored from its checkpoint (`loop.restore`), it goes through `fmjax.analysis.lag_search.search` on the
# furnace's events: every lag at once (one `vmap` over the offsets, another over the events), jitted.
# The plots: the mean similarity over lags with the true median lead marked, and each event's true vs
# estimated lead (the plain argmax here; the job's own report also applies its prior over lags).

# %%
import matplotlib.pyplot as plt

from fmjax.analysis import lag_search
from fmjax.data import onsets

align_dir = WORKDIR / "align"
align_config = cut(align_configs.get_config(VARIANT["align"]), "align")
align_summary = loop.train_and_evaluate(align_config, str(align_dir))
show_table(align_summary, ["steps", "lead_mae_s", "lead_within_10s", "lead_median_est_s", "lead_median_true_s",
                           "baseline_lead_mae_s", "events"], "Aligner (its own evaluation, with the prior)")

task, par, state = loop.restore(align_config, str(align_dir))
variables = jax.device_get(par.get_state(state).variables())
split = "test" if any(e.get("split") == "test" for r in range(len(task.data.recordings))
                      for e in task.data.events(r) or []) else "train"
spec, fns = task.inputs["spec"], task.predict_fns()  # the geometry and pure functions evaluators get
events = onsets.event_windows(task.data, split, spec, onset_at=0.5)
estimate = lag_search.search(fns["embed"], variables, events["video"], events["current"], window=spec["num_steps"],
                             max_lag=task.max_lag, step_seconds=spec["step_seconds"],
                             abnormal=events["labels"].any(-1), pool_steps=fns.get("pool_steps"))
lags_s = np.arange(task.max_lag + 1) * spec["step_seconds"]
true, found = events["lead_s"], np.asarray(estimate.lead_s)

figure, (curve, scatter) = plt.subplots(1, 2, figsize=(11, 4))
curve.plot(lags_s, np.asarray(estimate.similarity).mean(0))
curve.axvline(np.median(true), color="k", linestyle="--", label=f"true median lead {np.median(true):.0f} s")
curve.set(xlabel="lag (s)", ylabel="cosine similarity", title=f"Mean similarity vs lag ({len(true)} {split} events)")
curve.legend()
scatter.scatter(true, found)
span = [min(true.min(), np.nanmin(found, initial=np.inf)), max(true.max(), np.nanmax(found, initial=-np.inf))]
scatter.plot(span, span, "k--", label="estimate = truth")
scatter.set(xlabel="true lead (s)", ylabel="estimated lead (s)", title="Per event: true vs estimated lead")
scatter.legend()
figure.savefig(align_dir / "leadtime_search.png", dpi=100, bbox_inches="tight")
plt.close(figure)
display(Image(filename=str(align_dir / "leadtime_search.png")))
print(f"lead MAE {np.nanmean(np.abs(found - true)):.1f} s over {len(true)} {split} events (plain argmax)")

# %% [markdown]
# ## 8. Where the files are
#
# Each job's workdir holds `checkpoints/` (orbax; rerunning a cell resumes from the newest one),
# `summary.json`, `report.md` with its figures in `report/`, `metrics.jsonl` and TensorBoard files in
# `tb/`. On Colab, TensorBoard opens inline (cell 1 installs it where the runtime lacks it; without it, the
# training curves of cell 4's report are the same figures); set `COPY_TO` to a Drive folder to keep the runs
# after the runtime is recycled.

# %%
import importlib.util
import shutil

for job in sorted(p for p in WORKDIR.iterdir() if p.is_dir()):
  files = sorted(str(f.relative_to(job)) for f in job.iterdir())
  print(f"{job}: {', '.join(files)}")
if "google.colab" in sys.modules and importlib.util.find_spec("tensorboard") is None:
  print("TensorBoard is not installed (cell 1 installs it): the reports' training_curves figures show the curves")
elif "google.colab" in sys.modules:
  get_ipython().run_line_magic("load_ext", "tensorboard")  # noqa: F821 (IPython's)
  get_ipython().run_line_magic("tensorboard", f"--logdir {WORKDIR}")  # noqa: F821
if COPY_TO:
  shutil.copytree(WORKDIR, COPY_TO, dirs_exist_ok=True)
  print(f"copied {WORKDIR} to {COPY_TO}")
