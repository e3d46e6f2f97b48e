"""The Colab TPU notebook: in sync with its jupytext source, committed without outputs, executed top to
bottom in smoke mode (nbclient, 4 forced CPU devices); its badges and clone URL from one address."""

import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra (pip install -e '.[test]') brings nbformat")
jupytext = pytest.importorskip("jupytext", reason="the test extra brings jupytext")
nbclient = pytest.importorskip("nbclient", reason="the test extra brings nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "notebooks"))
import repository

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)
NOTEBOOK = os.path.join(REPO, "notebooks", "colab_tpu.ipynb")
SOURCE = os.path.join(REPO, "notebooks", "colab_tpu.py")


def cells(notebook) -> list[tuple[str, str, list[str]]]:
  return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in notebook.cells]


def test_notebook_matches_its_jupytext_source_and_has_no_outputs():
  committed = nbformat.read(NOTEBOOK, as_version=4)
  assert cells(committed) == cells(jupytext.read(SOURCE)), \
      "notebooks/colab_tpu.ipynb differs from its source: run `jupytext --sync notebooks/colab_tpu.py`"
  code = [c for c in committed.cells if c.cell_type == "code"]
  assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
  install = code[0]
  assert "skip-execution" in install.metadata.get("tags", []) and '"google.colab" in sys.modules' in install.source
  assert "colab_install.install_clone(" in install.source  # tests/test_colab_install.py tests what it runs


def test_the_repository_address_has_one_source(tmp_path):
  """setup.cfg's url is the source; the badges and the clone URL follow it, and point_at moves them all."""
  assert repository.disagreements() == []
  for path in ("setup.cfg", "README.md", "notebooks/colab_tpu.py", "notebooks/colab_tpu.ipynb"):
    (tmp_path / path).parent.mkdir(exist_ok=True)
    (tmp_path / path).write_text((pathlib.Path(REPO) / path).read_text())
  readme = (tmp_path / "README.md").read_text()
  (tmp_path / "README.md").write_text(readme.replace("github/fmjax/fmjax/blob", "github/someone/fmjax/blob"))
  assert repository.disagreements(str(tmp_path)) == [
      "README.md: badge https://colab.research.google.com/github/someone/fmjax/blob/main/notebooks/colab_tpu.ipynb "
      "is not https://colab.research.google.com/github/fmjax/fmjax/blob/main/notebooks/colab_tpu.ipynb"]
  written = repository.point_at("https://github.com/a-fork/fm.jax", "dev", repo=str(tmp_path))
  assert sorted(written) == ["README.md", "notebooks/colab_tpu.ipynb", "notebooks/colab_tpu.py", "setup.cfg"]
  assert repository.address(str(tmp_path)) == ("a-fork", "fm.jax") and repository.disagreements(str(tmp_path)) == []
  forked = jupytext.read(tmp_path / "notebooks" / "colab_tpu.ipynb")
  install = [c.source for c in forked.cells if c.cell_type == "code"][0]
  assert 'FMJAX_GIT = "https://github.com/a-fork/fm.jax.git"' in install and 'FMJAX_REF = "dev"' in install
  assert cells(forked) == cells(jupytext.read(tmp_path / "notebooks" / "colab_tpu.py"))
  with pytest.raises(ValueError, match="branch 'a b'"):
    repository.point_at("https://github.com/a-fork/fm.jax", "a b", repo=str(tmp_path))
  with pytest.raises(ValueError, match="not a GitHub repository"):
    repository.point_at("https://gitlab.com/a/b", repo=str(tmp_path))


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_in_smoke_mode(data_dir, monkeypatch):
  """Every cell but the install one, on 4 CPU devices, tiny configs, a scratch workdir: no error, the
  report figures and the plots shown (image outputs), and the summary tables printed. The kernel inherits
  conftest's environment: its 4 devices without the deadlocking pool, and $FMJAX_DATA_DIR, where the
  tiny furnace is already prepared."""
  monkeypatch.setenv("FMJAX_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert os.environ["FMJAX_DATA_DIR"] == data_dir
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  assert len(images) >= 4, f"{len(images)} image outputs"
  tables = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
  for title in ("Uni-Code pretraining", "Zero-shot transfer", "Early warning from the current",
                "FmFormer, cross-modal classifier", "Aligner"):
    assert title in tables, title
  assert "skip-execution" in notebook.cells[2].metadata.get("tags", []) and not notebook.cells[2].get("outputs")
