"""The Colab TPU notebook: in sync with its jupytext source, committed without outputs, executed top to
bottom in smoke mode (nbclient, 4 forced CPU devices); and install ranges that keep Colab's JAX."""

import configparser
import os

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra (pip install -e '.[test]') brings nbformat")
jupytext = pytest.importorskip("jupytext", reason="the test extra brings jupytext")
nbclient = pytest.importorskip("nbclient", reason="the test extra brings nbclient")
from packaging.specifiers import SpecifierSet  # noqa: E402  (packaging comes with the test extra)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def requirement(name: str) -> SpecifierSet:
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO, "setup.cfg"))
  for line in parser["options"]["install_requires"].split("\n"):
    line = line.strip()
    if line.split(">")[0].split("<")[0].split("=")[0].strip() == name:
      return SpecifierSet(line[len(name):])
  raise AssertionError(f"setup.cfg does not require {name}")


@pytest.mark.parametrize("name, versions", [
    ("jax", ["0.10.2", "0.11.2", "0.12.0", "0.12.9"]),            # this registry's; accelerator images; Colab
    ("flax", ["0.12.8", "0.13.0", "0.13.9"]),
    ("orbax-checkpoint", ["0.12.8", "0.13.0", "0.13.9"]),
])
def test_install_ranges_admit_the_jax_colab_ships(name, versions):
  """Installing fmjax on Colab must not change its JAX (a new jax no longer matches libtpu)."""
  spec = requirement(name)
  assert all(spec.contains(v) for v in versions), (name, str(spec), versions)


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
