"""The one entry point for jobs: python launch/main.py --config=configs/<job>.py[:variant] [--workdir=DIR].

Flags only (a multi-process run: --coordinator_address=HOST:PORT --num_processes=N --process_id=I on
each process, or --distributed=auto's cluster detection); all work happens in
`fmjax.train.loop.train_and_evaluate(config, workdir)`. Paths may be relative to the current directory
(the default workdir is runs/<config>[_<variant>]) or start with `~`.
An `fmjax.runtime.errors.UserError` (bad config, data or checkpoint; diverged training) is printed as one
`error:` line with exit status 1, and so is any exception raised from a full disk; any other exception is a bug
and keeps its traceback.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `configs` importable

import fmjax  # noqa: F401  # applies its version workarounds (fmjax.runtime.compat) before JAX starts

config_flags.DEFINE_config_file("config", None, "Job config file, e.g. configs/fmformer.py:seg.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, summary.json, report.md);"
                    " default runs/<config file name>[_<variant>].")
flags.DEFINE_enum("distributed", "auto", ["auto", "off"],
                  "auto: join a multi-process run when the flags below are given, or the cluster JAX's own "
                  "detection finds (a Cloud TPU pod slice, GKE, SLURM, Open MPI, Kubernetes); one process where "
                  "it finds none. off: always one process.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, the same for every process of the run.")
flags.DEFINE_integer("num_processes", None, "How many processes the run has.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1 (process 0 writes the files).")
flags.DEFINE_integer("heartbeat_timeout_s", 100, "A process that has not been heard from for this long counts as "
                     "dead, and JAX stops the others with an error.")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def default_workdir(config_arg: str) -> str:
  path, _, variant = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", name + (f"_{variant.replace(',', '_')}" if variant else ""))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or `--config.<key>` override reported as one `error:` line."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    sys.exit(f"error: {error}")
  except (AttributeError, KeyError) as error:  # config_flags: an override of a key the locked config lacks
    while error.args and isinstance(error.args[0], BaseException):
      error = error.args[0]
    key = " ".join(str(error.args[0] if error.args else error).split())
    sys.exit(f"error: a --config override names a key the config does not have: {key}")


def main(argv) -> None:
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  # after flags: keeps --help fast
  import jax

  from fmjax.runtime import distributed, exits, paths
  from fmjax.train import loop

  workdir = paths.resolve(FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"])))
  with exits.one_line_errors(workdir):
    try:
      if distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                FLAGS.heartbeat_timeout_s):
        print(distributed.describe(), file=sys.stderr, flush=True)  # every process, so each log says which it is
      summary = loop.train_and_evaluate(FLAGS.config, workdir)
    except loop.Interrupted as error:
      print(f"stopped: {error}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside training, evaluation and writing (which stop in their own way)
      print(f"stopped: interrupted (Ctrl-C) while the run of {workdir} was getting ready (preparing data, "
            "compiling or restoring); what was half-written is never used; rerun the same command to go on",
            file=sys.stderr)
      sys.exit(1)
  if jax.process_index() == 0:  # the process that wrote them
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(summary.items())))
    print(f"wrote {workdir}/summary.json and {workdir}/report.md")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
