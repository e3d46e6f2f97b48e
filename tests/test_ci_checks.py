"""CI's floors on the jobs' summaries (.ci/check_summary.py): a summary at the floors passes, one that misses
any floor fails, and a summary without a figure the floors check is an error, not a pass."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, ".ci", "check_summary.py")
spec = importlib.util.spec_from_file_location("check_summary", SCRIPT)
check_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_summary)


def at_the_floors(job: str) -> dict:
  """A summary that clears each floor of `job` by 0.01 (p: 0.001); references at chance (0.5 balanced)."""
  summary = {}
  for _, key, against, margin in check_summary.FLOORS[job]:
    if key.endswith("_p"):
      summary[key] = 0.001
    elif against is None:
      summary[key] = margin + 0.01
    else:
      summary[against] = summary.get(against, 0.5)
      summary[key] = summary[against] + margin + 0.01
  return summary


def run(job: str, summary: dict, tmp_path) -> subprocess.CompletedProcess:
  path = tmp_path / "summary.json"
  path.write_text(json.dumps(summary))
  return subprocess.run([sys.executable, SCRIPT, job, str(path)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("job", sorted(check_summary.FLOORS))
def test_a_summary_at_the_floors_passes_and_one_below_any_fails(job, tmp_path):
  good = at_the_floors(job)
  assert all(ok for _, ok in check_summary.check(job, good))
  for _, key, against, margin in check_summary.FLOORS[job]:
    broken = dict(good)
    broken[key] = 0.02 if key.endswith("_p") else (margin if against is None else good[against] + margin) - 0.02
    lines = check_summary.check(job, broken)
    assert [ok for _, ok in lines].count(False) == 1, (key, lines)
    broken[key] = float("nan")
    assert not all(ok for _, ok in check_summary.check(job, broken)), key
  assert run(job, good, tmp_path).returncode == 0
  result = run(job, {**good, check_summary.FLOORS[job][0][1]: -1.0}, tmp_path)
  assert result.returncode == 1 and "FAILED" in result.stdout and "floor(s) failed" in result.stderr


def test_never_trained_figures_fail_the_pretrain_floors():
  """The never-trained model's probes are the references: a model that learned nothing sits on them."""
  summary = at_the_floors("pretrain")
  summary.update(c2v_bacc=summary["baseline_c2v_bacc"], v2c_bacc=summary["baseline_v2c_bacc"])
  failed = [line for line, ok in check_summary.check("pretrain", summary) if not ok]
  assert len(failed) == 2 and all("over the never-trained model's" in line for line in failed)


def test_a_missing_figure_or_file_is_an_error(tmp_path):
  summary = at_the_floors("transfer")
  del summary["c2v_bacc"]
  result = run("transfer", summary, tmp_path)
  assert result.returncode == 2 and "holds no figure 'c2v_bacc'" in result.stderr
  missing = subprocess.run([sys.executable, SCRIPT, "pretrain", str(tmp_path / "nowhere.json")],
                           capture_output=True, text=True, check=False)
  assert missing.returncode == 2 and "cannot be read" in missing.stderr


def test_check_unchanged_names_each_constrained_package_that_moved(tmp_path):
  """.ci/check_unchanged.py: Colab's pins against `pip freeze` before and after installing fmjax."""
  script = os.path.join(REPO, ".ci", "check_unchanged.py")
  (tmp_path / "pins.txt").write_text("# Colab\njax==0.7.2\nJAXlib==0.7.2\nFlax==0.11.2\n")
  (tmp_path / "before.txt").write_text("jax==0.7.2\njaxlib==0.7.2\nflax==0.11.2\n-e git+https://x#egg=y\n")
  (tmp_path / "same.txt").write_text("Jax==0.7.2\njaxlib==0.7.2\nflax==0.11.2\nfmjax==0.1.0\n")
  (tmp_path / "moved.txt").write_text("jax==0.10.2\njaxlib==0.10.2\nflax==0.11.2\n")
  run = lambda after: subprocess.run([sys.executable, script, str(tmp_path / "pins.txt"), str(tmp_path / "before.txt"),
                                      str(tmp_path / after)], capture_output=True, text=True, check=False)
  same, moved, missing = run("same.txt"), run("moved.txt"), run("absent.txt")
  assert same.returncode == 0 and "the 3 packages" in same.stdout
  assert moved.returncode == 1 and moved.stdout.splitlines() == [
      "check_unchanged: FAILED jax: pinned 0.7.2, 0.7.2 before the install, 0.10.2 after it",
      "check_unchanged: FAILED jaxlib: pinned 0.7.2, 0.7.2 before the install, 0.10.2 after it"]
  assert missing.returncode == 2 and "absent.txt" in missing.stderr


def test_colab_constraints_pin_colabs_version_of_each_package_the_install_brings(tmp_path, capsys):
  """.ci/colab_constraints.py: the requirement closure as installed here, pinned at the snapshot's versions."""
  spec = importlib.util.spec_from_file_location("colab_constraints", os.path.join(REPO, ".ci", "colab_constraints.py"))
  colab_constraints = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(colab_constraints)
  assert {"pytest-timeout", "pytest", "pluggy"} <= colab_constraints.closure("pytest_timeout")
  assert "einops" in colab_constraints.closure("fmjax")  # tensorflow-datasets asks for etils[enp], which brings it
  (tmp_path / "freeze.txt").write_text("Pytest==8.4.2\npluggy==1.6.0\nnumpy==2.1.3\n-e git+https://x#egg=y\n")
  arguments = [str(tmp_path / "freeze.txt"), "--source", "a snapshot", "--root", "pytest-timeout"]
  assert colab_constraints.main(arguments) == 0
  out = capsys.readouterr().out
  assert [line for line in out.splitlines() if not line.startswith("#")] == ["pluggy==1.6.0", "Pytest==8.4.2"]
  assert "Source: a snapshot." in out and "pytest-timeout" not in out.split("unpinned:")[1]  # the root itself
