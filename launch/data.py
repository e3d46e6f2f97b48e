r"""Data commands: make a synthetic furnace, convert the official single-file release, validate an FMF root,
prepare it for training.

  python launch/data.py synth --out DIR [--preset pixel-level|class-level] [--seed N] [--recordings N] \
      [--duration_s S] [--fps F] [--lead_min_s A] [--lead_max_s B]
  python launch/data.py convert SRC --out DIR --fps F [--start "YYYY-MM-DD HH:MM:SS"]
                                         # SRC: a folder of single-file .mat recordings (set1.mat, ...)
  python launch/data.py validate DIR     # one summary line per recording; or one error line, exit 1
  python launch/data.py prepare DIR [--data_dir D] [--fingerprint stat|content] [--verify]

`convert` writes every SRC/*.mat (the official V1 form: video, current, label, train_test_index in one
file; fmjax.data.single_file) as a recording of the V2 folder layout that fmjax reads: frames and masks
copied byte for byte, frame k at start + floor(k / F) seconds, the current (one reading per frame)
resampled to two rows per second. `prepare --verify` then reads every record back and checks it against
the index; `--fingerprint=content` names the root by its files' bytes instead of their sizes and times.

Paths may be relative to the current directory or start with `~`. Bad input, and anything that stops
the work (no space left, an unreadable file), prints one line naming the file or folder and the
problem, and exits with status 1; what a killed command left is removed by the next one.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app, flags

from fmjax.data import single_file, synthetic, tfds_fmf
from fmjax.data.validate import validate_root
from fmjax.runtime import errors, exits, memory, paths

_DEFAULTS = synthetic.SyntheticConfig()
flags.DEFINE_enum("preset", None, sorted(synthetic.PRESETS),
                  "synth: a furnace shaped like a benchmark release (pixel-level: 3 x 1 h at 25 fps, 270,000 "
                  "frames; class-level: 2.2 million frames at 25 fps, one label per frame); other flags given "
                  "override its values.")
flags.DEFINE_string("out", None, "synth, convert: folder to write the FMF root into (must be new or empty).")
flags.DEFINE_string("data_dir", None, "prepare: cache folder for prepared datasets "
                    "(default $FMJAX_DATA_DIR or ~/.cache/fmjax/tfds).")
flags.DEFINE_string("fingerprint", "stat", "prepare: what names a root's prepared copy: 'stat' (its files' sizes and "
                    "times) or 'content' (a hash of their bytes, for files that may change without either).")
flags.DEFINE_bool("verify", False, "prepare: then read every record back and check it against the index.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "synth: random seed; the same seed writes the same data.")
flags.DEFINE_integer("recordings", _DEFAULTS.recordings, "synth: number of recordings.")
flags.DEFINE_integer("duration_s", _DEFAULTS.duration_s, "synth: seconds per recording.")
flags.DEFINE_float("fps", _DEFAULTS.fps, "synth: video frames per second; convert (required there): the frame rate "
                  "of the videos, which the single-file form does not record.")
flags.DEFINE_float("lead_min_s", _DEFAULTS.lead_min_s, "synth: shortest lead of current over video, seconds.")
flags.DEFINE_float("lead_max_s", _DEFAULTS.lead_max_s, "synth: longest lead, seconds.")
flags.DEFINE_string("start", None, "convert: timestamp of every recording's first frame, 'YYYY-MM-DD HH:MM:SS' "
                    f"(default {single_file.DEFAULT_START!r}).")
FLAGS = flags.FLAGS
_SYNTH_FLAGS = ("seed", "recordings", "duration_s", "fps", "lead_min_s", "lead_max_s")
_USAGE = "usage: launch/data.py {synth --out DIR | convert SRC --out DIR --fps F | validate DIR | prepare DIR} [flags]"


def summary_line(s: dict) -> str:
  h, w = s["image"]
  return (f"{s['name']}: {s['frames']} frames {h}x{w}, {s['seconds']} s, current {s['current_min']:.0f}-"
          f"{s['current_max']:.0f} A, abnormal {100 * s['abnormal_share']:.1f}%, "
          f"train {s.get('train', 0)} / test {s.get('test', 0)} frames"
          + (", class-level labels (one per frame)" if s["labels"] == "per frame" else ""))


def synth(out: str) -> None:
  if os.path.isdir(out) and os.listdir(out):
    raise errors.WorkdirError(f"{out}: folder exists and is not empty; choose a new --out (nothing was overwritten)")
  paths.ensure_writable_dir(out, "--out folder")
  cfg = dataclasses.replace(_DEFAULTS, **synthetic.PRESETS.get(FLAGS.preset, {}))
  given = {name: FLAGS[name].value for name in _SYNTH_FLAGS if FLAGS[name].present or not FLAGS.preset}
  cfg = dataclasses.replace(cfg, **given)
  cfg.validate()
  start = time.perf_counter()
  results = synthetic.write_root(out, cfg, progress=sys.stderr.isatty())
  seconds = time.perf_counter() - start
  for s, r in zip(validate_root(out), results):
    leads = "/".join(f"{e['lead_s']:.0f}" for e in r["events"])
    print(f"{summary_line(s)}, {len(r['events'])} events (leads {leads} s)")
  frames = sum(r["frames"] for r in results)
  print(f"wrote {out}: {len(results)} recordings, {frames} frames in {seconds:.1f} s "
        f"({frames / seconds:.0f} frames/s); ground truth in {os.path.join(out, 'events')}")


def convert(src: str, out: str) -> None:
  if not FLAGS["fps"].present:
    raise errors.ConfigError("convert needs --fps: the videos' frames per second, which the single-file .mat "
                             "files do not record")
  start = time.perf_counter()
  results = single_file.convert(src, out, FLAGS.fps, FLAGS.start, progress=sys.stderr.isatty())
  seconds = time.perf_counter() - start
  for s in validate_root(out):
    print(summary_line(s))
  print(f"converted {src} into {out}: {len(results)} recordings, {sum(r['frames'] for r in results)} frames in "
        f"{seconds:.1f} s; the current was resampled from one reading per frame ({FLAGS.fps:g} fps) to two rows "
        "per second")


def validate(root: str) -> None:
  for s in validate_root(root):
    print(summary_line(s))


def prepare(root: str) -> None:
  start = time.perf_counter()
  prepared = tfds_fmf.load(root, paths.resolve(FLAGS.data_dir or "") or None, FLAGS.fingerprint)
  verified = {"verified": tfds_fmf.verify(prepared)} if FLAGS.verify else {}
  print(json.dumps({**tfds_fmf.describe(prepared), **verified, "seconds": round(time.perf_counter() - start, 2),
                    "peak_rss_mb": memory.peak_rss_mb()}))


def main(argv):
  command, args = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  with exits.one_line_errors(paths.resolve(FLAGS.out or FLAGS.data_dir or ".")):
    try:
      if command == "synth" and not args and FLAGS.out:
        synth(paths.resolve(FLAGS.out))
      elif command == "convert" and len(args) == 1 and FLAGS.out:
        convert(paths.resolve(args[0]), paths.resolve(FLAGS.out))
      elif command in ("validate", "prepare") and len(args) == 1:
        {"validate": validate, "prepare": prepare}[command](paths.resolve(args[0]))
      else:
        raise errors.ConfigError(_USAGE)
    except errors.UserError:  # (WorkdirError and DataError are OSErrors too)
      raise
    except OSError as e:  # the machine's, not fmjax's: a disk that fills, a file that cannot be read
      print(f"error: {e.filename or (args[0] if args else FLAGS.out)}: {e.strerror or e}", file=sys.stderr)
      sys.exit(1)


if __name__ == "__main__":
  app.run(main)
