"""Writes .ci/colab-constraints.txt from a snapshot of what Colab's runtimes ship: Colab's version of every package
that installing fmjax with its test extra brings, its dependencies' dependencies included (ml_dtypes, tensorstore,
ipykernel, ...), so CI's second environment is Colab's stack, not only its jax.

    git clone https://github.com/googlecolab/backend-info
    grep == backend-info/pip-freeze.tpu.txt > colab.txt
    pip install -c colab.txt -e ".[test]"   # in a fresh venv: the walk reads this install's requirements, and
                                            # Colab's ipython/ipykernel bring other dependencies than the newest
    python .ci/colab_constraints.py backend-info/pip-freeze.tpu.txt \\
        --source "googlecolab/backend-info pip-freeze.tpu.txt, commit <sha> of <date>" > .ci/colab-constraints.txt

The TPU runtime's freeze is the one to use (it lacks TensorBoard, which the notebook then installs); its jax, flax,
orbax and the rest are the GPU and CPU runtimes' too. Then check that setup.cfg's ranges still admit each pin
(tests/test_colab_install.py does) and run `.ci/run`.
"""

import argparse
import os
import sys
import textwrap
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_unchanged import pins


def closure(root: str) -> set[str]:
  """Canonical names of `root` (a requirement, extras allowed) and everything it requires, as installed here."""
  seen, todo = set(), [Requirement(root)]  # (name, extra): a package asked for again with an extra adds its deps
  while todo:
    requirement = todo.pop()
    name = canonical(requirement.name)
    extras = {canonical(e) for e in requirement.extras} | {""}
    if {(name, e) for e in extras} <= seen:
      continue
    seen |= {(name, e) for e in extras}
    try:
      requires = metadata.requires(requirement.name) or []
    except metadata.PackageNotFoundError:
      continue  # not installed here (a dependency for another platform or Python)
    for line in requires:
      child = Requirement(line)
      if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras):
        todo.append(child)
  return {name for name, _ in seen}


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("freeze", help="Colab's `pip freeze` (backend-info's pip-freeze.tpu.txt)")
  parser.add_argument("--source", required=True, help="where the freeze comes from: repository, file, commit, date")
  parser.add_argument("--root", default="fmjax[test]", help="the install whose packages to pin")
  args = parser.parse_args(argv)
  colab = pins(args.freeze, spelled=True)
  names = closure(args.root) - {canonical(Requirement(args.root).name)}
  pinned = sorted(n for n in names if n in colab)
  print("# The versions Colab's runtimes ship of every package that installing fmjax with its test extra brings,")
  print("# as pip constraints (CI's second environment installs exactly these: .ci/run).")
  notes = (f"Source: {args.source}. Written by .ci/colab_constraints.py (its docstring says how to refresh). "
           f"Not on Colab, so unpinned: {', '.join(sorted(names - set(pinned)))}.")
  print("\n".join(textwrap.wrap(notes, 110, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)))
  for name in pinned:
    print(f"{colab[name][0]}=={colab[name][1]}")  # as the snapshot spells the name
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
