"""The README's set-up commands are the ones CI runs, verbatim, so the two cannot drift apart."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section(markdown: str, title: str) -> str:
  match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
  assert match, f"README has no '## {title}' section"
  return match.group(1)


def commands(text: str) -> list[str]:
  """The indented (code block) lines of a markdown section."""
  return [line.strip() for line in text.splitlines() if line.startswith("    ") and line.strip()]


def test_ci_runs_the_readme_commands_verbatim():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    setup = commands(section(f.read(), "Set up and run"))
  with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
    ci = [line.strip() for line in f]
  assert setup[0] == "pip install -e . && python launch/main.py --config=configs/pretrain.py"  # the main job first
  assert any(c.startswith("python launch/main.py --config=configs/transfer.py") for c in setup)
  assert any(c.endswith("python -m pytest -q") for c in setup)
  missing = [c for c in setup if c not in ci]
  assert not missing, f".ci/run lacks the README's commands {missing}"
  order = [ci.index(c) for c in setup]
  assert order == sorted(order), "CI runs the README's commands in another order than the README gives them"
