"""The repository's address, kept in one place: `url` in setup.cfg.

The Open-in-Colab badges (README and notebook) and the notebook's clone URL (`FMJAX_GIT`) are copies of it that
Colab and GitHub read as plain text; this module checks that they agree with it (a test runs the check) and points
them all at another repository:

  python notebooks/repository.py https://github.com/you/fmjax [--branch BRANCH]

rewrites setup.cfg, README.md and the notebook (both forms) for a fork, then commit. `--branch` also sets the
badges' branch and the notebook's `FMJAX_REF` (default: main).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = "notebooks/colab_tpu.ipynb"
_GITHUB = r"https://github\.com/([\w.-]+)/([\w.-]+?)"
# Each copy of the address: (its pattern, in which files, how it is written from (owner, name, branch)).
COPIES = {
    "badge": (re.compile(rf"https://colab\.research\.google\.com/github/([\w.-]+)/([\w.-]+)/blob/([\w./-]+?)/"
                         rf"{re.escape(NOTEBOOK)}"),
              ("README.md", "notebooks/colab_tpu.py", NOTEBOOK),
              lambda o, n, b: f"https://colab.research.google.com/github/{o}/{n}/blob/{b}/{NOTEBOOK}"),
    "clone": (re.compile(rf'FMJAX_GIT = \\?"{_GITHUB}\.git\\?"'), ("notebooks/colab_tpu.py", NOTEBOOK),
              lambda o, n, b: f'FMJAX_GIT = "https://github.com/{o}/{n}.git"'),
    "branch": (re.compile(r'FMJAX_REF = \\?"([\w./-]+)\\?"'), ("notebooks/colab_tpu.py", NOTEBOOK),
               lambda o, n, b: f'FMJAX_REF = "{b}"'),
}


def address(repo: str = REPO) -> tuple[str, str]:
  """(owner, name) of setup.cfg's `url`, a GitHub repository's address."""
  parser = configparser.ConfigParser()
  parser.read(os.path.join(repo, "setup.cfg"))
  url = parser.get("metadata", "url", fallback="")
  match = re.fullmatch(_GITHUB + "/?", url)
  if not match:
    raise ValueError(f"setup.cfg: [metadata] url {url!r} is not a GitHub repository's address "
                     f"(https://github.com/OWNER/NAME)")
  return match.group(1), match.group(2)


def _read(repo: str, path: str) -> str:
  with open(os.path.join(repo, path), encoding="utf-8") as f:
    return f.read()


def disagreements(repo: str = REPO) -> list[str]:
  """One line per copy of the address that is missing or differs from setup.cfg's (badges: the notebook's branch)."""
  owner, name = address(repo)
  ref = COPIES["branch"][0].search(_read(repo, "notebooks/colab_tpu.py"))
  if not ref:
    return ['notebooks/colab_tpu.py: no FMJAX_REF = "BRANCH" line (the branch the badges open)']
  branch = ref.group(1)
  problems = []
  for what, (pattern, files, write) in COPIES.items():
    expected = write(owner, name, branch)
    for path in files:
      found = [m.group(0).replace('\\"', '"') for m in pattern.finditer(_read(repo, path))]
      if not found:
        problems.append(f"{path}: no {what} ({expected})")
      problems += [f"{path}: {what} {f} is not {expected}" for f in found if f != expected]
  return problems


def point_at(url: str, branch: str = "main", repo: str = REPO) -> list[str]:
  """Rewrites setup.cfg's url and every copy of it for `url` (and `branch`); the files it changed."""
  match = re.fullmatch(_GITHUB + r"(?:\.git)?/?", url)
  if not match:
    raise ValueError(f"{url!r} is not a GitHub repository's address (https://github.com/OWNER/NAME)")
  owner, name = match.groups()
  if not re.fullmatch(r"[\w./-]+", branch):
    raise ValueError(f"branch {branch!r}: fmjax's badges take a branch of letters, digits and . _ / - only")
  changed = {}
  setup = _read(repo, "setup.cfg")
  changed["setup.cfg"] = re.sub(r"(?m)^url = .*$", f"url = https://github.com/{owner}/{name}", setup)
  for pattern, files, write in COPIES.values():
    for path in files:
      text = changed.get(path, _read(repo, path))
      quote = '\\"' if path.endswith(".ipynb") else '"'  # the notebook's JSON escapes the quotes
      changed[path] = pattern.sub(lambda _: write(owner, name, branch).replace('"', quote), text)
  written = []
  for path, text in changed.items():
    if text != _read(repo, path):
      with open(os.path.join(repo, path), "w", encoding="utf-8") as f:
        f.write(text)
      written.append(path)
  return written


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("url", help="the repository to point at, https://github.com/OWNER/NAME")
  parser.add_argument("--branch", default="main", help="the branch the badges open and the notebook clones")
  args = parser.parse_args(argv)
  try:
    written = point_at(args.url, args.branch)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"pointed at {args.url} ({args.branch}): {', '.join(written) or 'nothing to change'}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
