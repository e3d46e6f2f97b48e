"""Config pieces shared by every job: the trainer's base config, the shared tiny overlay, the data.

`trainer_config(job)` holds every key the trainer (`fmjax.train.loop`) reads; a job config extends it
with its model, loss weights, input geometry and evaluators. `tiny(config)` is the one overlay that
shrinks any job to a seconds-long smoke run (tests); jobs add only their own model sizes to it.

`evaluation(type, **overrides)` is one entry of `config.evals`: each fmjax evaluator's settings are
written once, in `EVALUATIONS`, and a job names only what it changes; `tiny_evaluations(config)`
shrinks them all for smoke runs.

`data_config()` is `config.data`. With `root` empty the job uses the synthetic furnace described
by `config.data.synthetic` (the fields of `fmjax.data.synthetic.SyntheticConfig`), generated and
prepared under `data_dir` on first use; with `root` set it uses that FMF root. `fingerprint` says what
names a root's prepared copy ('stat': its files' sizes and times; 'content': a hash of their bytes, for
roots whose files may change without either; `fmjax.data.fingerprint`).
"""

import ml_collections

from fmjax.data.config import default as data_config  # config.data: its keys, their defaults
from fmjax.runtime import errors
from fmjax.train import optim

# The tiny furnace of the tiny configs and the tests (tests/conftest.py prepares it once per run; align's
# tiny variant shortens its leads): two 20-minute recordings at 1 fps, each holding an event in its
# training split and one in its test split.
TINY_DATA = dict(recordings=2, duration_s=1200, fps=1.0, image_size=32, lead_min_s=120.0, lead_max_s=200.0,
                 anomaly_min_s=200.0, anomaly_max_s=400.0, abnormal_ratio=0.5, spot_radius_min=4, spot_radius_max=7,
                 seed=2)


def trainer_config(job: str, model_name: str = "") -> ml_collections.ConfigDict:
  """The keys the trainer reads, with their defaults; `job` names the task module (fmjax.runtime.registry.find)."""
  config = ml_collections.ConfigDict()
  config.job = job
  config.seed = 0
  config.parallel = "shard_map"     # or 'pmap'
  config.num_devices = 0            # 0: every device of every process; N: this single process's first N devices
  config.data = data_config()
  config.input = dict(batch_size=32, worker_count=0)   # global batch; grain workers per host (0: in-process)
  config.model_name = model_name    # the model module (fmjax.models.<name>, or a module path): Model(**config.model)
  config.model = {}
  config.loss = {}                  # weight of each named loss term; 0 switches a term off
  config.optimizer = optim.default_config()
  config.num_train_steps = 1000
  config.log_every = 50
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  config.evals = {}                 # name -> dict(type=<evaluator module>, **its settings), run in name order
  config.init_from = ""             # a converted model dir (fmjax.convert CLI) or another run's workdir
  config.eval_only = False
  config.restart = False            # True: move the workdir's checkpoints aside and train from step 0
  config.accept_changes = False     # True: resume although the config differs from the saved one (recorded)
  config.compile_cache = ""         # JAX's persistent compilation cache: '' ~/.cache/fmjax/jax_cache, a path, or 'off'
  return config


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The shared smoke-run overlay: the tiny furnace, 6 steps of 8 samples, logs and checkpoints often, and
  small evaluations (`tiny_evaluations`; call it after the job's evaluators are set)."""
  tiny_evaluations(config)
  config.data = data_config(**TINY_DATA)
  config.input.batch_size = 8
  config.optimizer.warmup_steps = 2
  config.num_train_steps = 6
  config.log_every = 2
  config.checkpoint_every = 3
  return config


# Every setting of each fmjax evaluator (fmjax.evals.<type>; they take no defaults of their own), as the
# laptop-sized default jobs use them. The evaluators' docstrings say what each means.
EVALUATIONS = {
    "classification": dict(split="test", batch_size=64, stride=1, max_clips=0, heavy_mist=0.75),
    # a test sequence every stride_s seconds (0: every frame's); the agreement tested against
    # agreement_permutations re-pairings of the sequences (0: off)
    "codebook": dict(split="test", stride_s=2.0, batch_size=64, agreement_permutations=1000),
    # linear heads on one modality's code vectors from train_sequences training sequences, head_steps
    # full-batch Adam steps each, tested on the other's; metrics: the ones kept (empty: all); toc_dims:
    # also on that many codebook dimensions chosen by training-free codebook optimisation (0: off)
    "probes": dict(split="test", stride_s=2.0, batch_size=64, train_sequences=2048, head_steps=300, metrics=(),
                   toc_dims=0),
    # the V->C head over whole current streams as alarms, by a rule fitted on the training split (the
    # score averaged over one of smooth_steps, chosen by leaving each training recording out, and the
    # lowest threshold with at most false_per_h false alarms per hour there), beside the hand-crafted
    # unsteadiness detector, and with fmformer_from=<workdir of a configs/fmformer.py:current run>
    # beside that supervised current-only model; toc_dims: also a head on that many dimensions of each
    # codebook chosen by training-free codebook optimisation (0: off)
    "warning": dict(split="test", batch_size=64, train_sequences=2048, head_steps=300, smooth_steps=(5, 15, 30, 60, 90),
                    false_per_h=1.0, confirm_s=400.0, before_s=60.0, fmformer_from="", toc_dims=0),
    # each event's video window has its visual onset at onset_at of its length; chunk lags per lax.map
    # chunk (0: all at once); the baseline smooths steadiness over a few steps. prior: the lead is the
    # posterior's argmax under a prior over lags from the plain searches of every visual onset (by the
    # labels) of prior.split: a kernel density of bandwidth_steps (0: Silverman's rule), floor of it
    # uniform; split '' searches by similarity alone.
    "lead_time": dict(split="test", onset_at=0.5, chunk=0, batch_size=16, baseline_smooth_steps=5,
                      prior=dict(split="train", bandwidth_steps=0.0, floor=0.1)),
}
# What the tiny overlay gives every evaluator that has the setting.
TINY_EVALUATIONS = dict(batch_size=16, stride_s=10.0, train_sequences=64, head_steps=20)


def evaluation(type_: str, **overrides) -> dict:
  """`config.evals` entry of fmjax's evaluator `type_`: its settings of `EVALUATIONS`, with `overrides`."""
  unknown = sorted(set(overrides) - set(EVALUATIONS[type_]))
  if unknown:
    raise errors.ConfigError(f"the {type_!r} evaluator has no setting(s) {unknown}")
  return dict(type=type_, **{**EVALUATIONS[type_], **overrides})


def tiny_evaluations(config: ml_collections.ConfigDict) -> None:
  """`TINY_EVALUATIONS` on every evaluator of `config` that has those settings."""
  for settings in config.evals.values():
    settings.update({k: v for k, v in TINY_EVALUATIONS.items() if k in settings})


def variants(arg: str | None, allowed: tuple[str, ...], job: str) -> list[str]:
  """The comma-separated variants of `--config=configs/<job>.py:<arg>`; an unknown one is an error."""
  chosen = [v for v in (arg or "").split(",") if v]
  unknown = sorted(set(chosen) - set(allowed))
  if unknown:
    raise errors.ConfigError(f"unknown {job} variant(s) {unknown}; choose from {allowed}")
  return chosen


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The data config alone; `tiny` shrinks the synthetic furnace for tests and smoke runs."""
  return data_config(**TINY_DATA) if arg == "tiny" else data_config()
