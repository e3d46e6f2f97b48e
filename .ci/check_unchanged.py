"""CI's check that installing fmjax left Colab's packages as they were: each package pinned in the constraints file
has the same version in `pip freeze` after the install as before it (and as pinned).

    python .ci/check_unchanged.py .ci/colab-constraints.txt before.txt after.txt

Prints one line per package that moved, or one line saying none did; exit status 1 if any moved, 2 for a file
that cannot be read.
"""

import sys

from packaging.utils import canonicalize_name


def pins(path: str, spelled: bool = False) -> dict:
  """{canonical name: version} of the `name==version` lines of a constraints file or `pip freeze`'s output
  ({canonical name: (name as written, version)} with `spelled`)."""
  with open(path, encoding="utf-8") as f:
    lines = [line.split("#")[0].strip() for line in f]
  pairs = [[part.strip() for part in line.split("==", 1)] for line in lines if "==" in line]
  return {canonicalize_name(n): (n, v) if spelled else v for n, v in pairs}


def moved(constraints: dict[str, str], before: dict[str, str], after: dict[str, str]) -> list[str]:
  """One line per constrained package not at its pinned version both before and after the install."""
  lines = []
  for name, pinned in sorted(constraints.items()):
    was, now = before.get(name, "absent"), after.get(name, "absent")
    if not was == now == pinned:
      lines.append(f"{name}: pinned {pinned}, {was} before the install, {now} after it")
  return lines


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__, file=sys.stderr)
    return 2
  try:
    constraints, before, after = map(pins, argv)
  except OSError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  problems = moved(constraints, before, after)
  for line in problems:
    print(f"check_unchanged: FAILED {line}")
  if not problems:
    print(f"check_unchanged: the {len(constraints)} packages of {argv[0]} are unchanged")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
