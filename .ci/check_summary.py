"""CI's check of what a job's summary.json says, not only that it exists: floors that the default configs
clear with a wide margin on every seed measured (README, "Results"; bench/RESULTS.md) and that a model
which learned nothing, or lost its codebook, does not (the main job cut to one training step fails four
of the five: bench/RESULTS.md, "The test suite").

    python .ci/check_summary.py pretrain runs/pretrain/summary.json
    python .ci/check_summary.py transfer runs/transfer/summary.json

Prints one line per floor (the figure, the floor, ok or FAILED); exit status 1 if any fails, 2 for a
missing or unreadable file or figure.
"""

import json
import math
import sys

# (what, the figure's key, the key of the figure it is compared with or None, the least margin over it)
FLOORS = {
    "pretrain": [
        # seeds 0-2: 127-138 of 400 codes; a collapsed codebook uses one or a few
        ("codebook perplexity", "perplexity", None, 8.0),
        # the permutation test of the codes' shared information: p = 0.001 (its least value) on every seed
        ("codes' MI, permutation p below 0.01", "code_mi_p", None, None),
        ("codes' MI above its permutation null, bits", "code_mi_bits", "code_mi_null_bits", 0.5),
        # zero-shot probes against the same probes on the never-trained model (transfer: +0.19 and +0.29)
        ("C->V balanced accuracy over the never-trained model's", "c2v_bacc", "baseline_c2v_bacc", 0.1),
        ("V->C balanced accuracy over the never-trained model's", "v2c_bacc", "baseline_v2c_bacc", 0.05),
        # No floor on the early warning: a model trained for one step warned of 6 of the 7 test events too.
    ],
    "transfer": [
        ("C->V balanced accuracy over the never-trained model's", "c2v_bacc", "baseline_c2v_bacc", 0.1),
        ("V->C balanced accuracy over the never-trained model's", "v2c_bacc", "baseline_v2c_bacc", 0.05),
    ],
}
P_BELOW = 0.01


def check(job: str, summary: dict) -> list[tuple[str, bool]]:
  """(line, ok) per floor of `job` on `summary`; KeyError for a figure the summary lacks."""
  lines = []
  for what, key, against, margin in FLOORS[job]:
    value = float(summary[key])
    if key.endswith("_p"):
      ok, floor = value < P_BELOW, f"< {P_BELOW:g}"
    elif against is None:
      ok, floor = value >= margin, f">= {margin:g}"
    else:
      reference = float(summary[against])
      ok, floor = value >= reference + margin, f">= {against} {reference:.4g} + {margin:g}"
    ok = ok and not math.isnan(value)
    lines.append((f"{what}: {key} = {value:.4g} ({floor}) {'ok' if ok else 'FAILED'}", ok))
  return lines


def main(argv: list[str]) -> int:
  if len(argv) != 3 or argv[1] not in FLOORS:
    print(f"usage: python .ci/check_summary.py {{{','.join(FLOORS)}}} SUMMARY_JSON", file=sys.stderr)
    return 2
  job, path = argv[1], argv[2]
  try:
    with open(path, encoding="utf-8") as f:
      lines = check(job, json.load(f))
  except (OSError, ValueError) as e:
    print(f"ci: {path}: cannot be read as a summary ({e})", file=sys.stderr)
    return 2
  except KeyError as e:
    print(f"ci: {path}: holds no figure {e} that the {job} floors check", file=sys.stderr)
    return 2
  for line, _ in lines:
    print(f"ci: {job} {line}")
  failed = sum(not ok for _, ok in lines)
  if failed:
    print(f"ci: {path}: {failed} floor(s) failed: the {job} job ran but its model did not learn what it should",
          file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
