"""Report: every section type renders, links PNGs that exist and are valid, and shows the values."""

import os
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fmjax.runtime import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_links(markdown):
  return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def assert_valid_pngs(workdir, links):
  for link in links:
    assert not os.path.isabs(link) and link.startswith("report/")
    path = os.path.join(workdir, link)
    assert os.path.getsize(path) > len(PNG_SIGNATURE)
    with open(path, "rb") as f:
      assert f.read(8) == PNG_SIGNATURE, link


@pytest.fixture
def history():
  records = [{"step": s, "split": "train", "loss": 1.0 / s, "lr": 1e-3} for s in range(1, 21)]
  records += [{"step": s, "split": "eval", "loss": 0.8 / s, "acc": 0.5 + s / 100} for s in (10, 20)]
  return sorted(records, key=lambda r: r["step"])


def test_report_with_every_section(tmp_path, history):
  workdir = str(tmp_path / "run")
  rng = np.random.default_rng(0)
  true = np.zeros((8, 16, 16), np.uint8)
  true[:, 4:9, 5:11] = 1
  predicted = np.roll(true, 1, axis=2)
  frames = rng.integers(0, 256, (8, 16, 16, 3), np.uint8)
  r = report.Report(workdir, "FmFormer vicu_seg")
  r.add_text("Run", "config `vicu_seg`, seed 0")
  r.add_table("Test metrics", {"acc": 0.912345678, "f1": np.float32(0.5), "steps": 2000, "model": "a|b"})
  r.add_curves("Training curves", history, ["loss", "acc"])
  r.add_curves("Train loss", history, ["loss", "missing_key"], split="train")
  r.add_confusion("Confusion", np.array([[4, 2], [1, 3]]))
  r.add_masks("Masks over frames", predicted, true, frames=frames, max_rows=3)
  r.add_masks("Masks", predicted[:2], true[:2])
  r.add_bars("Codebook usage", rng.integers(0, 50, 32), "code", "count")
  r.add_line("Lead time", np.arange(-10, 11), -np.abs(np.arange(-10, 11)), "lag (s)", "similarity", marker_x=0)
  t = np.arange(0, 100, 2.0)
  r.add_timeline("Warning", t, {"score": np.sin(t / 10) ** 2, "label": t > 60}, {"visual onset": [60.0]}, threshold=0.5)
  path = r.write()
  assert path == os.path.join(workdir, "report.md")
  text = open(path).read()
  assert text.startswith("# FmFormer vicu_seg\n")
  links = image_links(text)
  assert len(links) == 8 and len(set(links)) == 8
  assert_valid_pngs(workdir, links)
  assert sorted(os.listdir(os.path.join(workdir, "report"))) == sorted(os.path.basename(p) for p in links)
  # table values: floats at 4 significant digits, ints and strings as they are (pipes escaped)
  assert "| acc | 0.9123 |" in text and "| f1 | 0.5 |" in text and "| steps | 2000 |" in text
  assert "| model | a\\|b |" in text
  # confusion matrix table, rows = label
  assert "| normal | 4 | 2 |" in text and "| abnormal | 1 | 3 |" in text
  assert "no data for split 'train' for missing_key" in text
  # 5 rows x 6 columns shifted by one column: 5*5 / (5*7)
  assert "IoU of the abnormal class per row: 0.714, 0.714, 0.714." in text
  assert "marked at lag (s) = 0." in text
  for heading in ["Run", "Test metrics", "Training curves", "Confusion", "Masks over frames", "Codebook usage",
                  "Lead time"]:
    assert f"## {heading}\n" in text
  assert plt.get_fignums() == []  # every figure closed


def test_sections_without_data_say_so_and_save_nothing(tmp_path, history):
  workdir = str(tmp_path)
  r = report.Report(workdir, "empty")
  r.add_curves("Curves", history, ["loss"], split="test")
  r.add_curves("Nothing", [], ["loss"])
  r.add_bars("Bars", np.array([]), "code", "count")
  r.add_line("Line", [], [], "lag", "similarity")
  r.add_masks("Masks", np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
  r.add_timeline("Timeline", [], {}, {})
  text = open(r.write()).read()
  assert text.count("no data") == 6
  assert image_links(text) == []
  assert not os.path.exists(os.path.join(workdir, "report"))


def test_bad_shapes_raise(tmp_path):
  r = report.Report(str(tmp_path), "bad")
  with pytest.raises(ValueError, match="class names"):
    r.add_confusion("c", np.zeros((3, 3), int))
  with pytest.raises(ValueError, match="masks"):
    r.add_masks("m", np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
  with pytest.raises(ValueError, match="frames"):
    r.add_masks("m", np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), frames=np.zeros((2, 5, 4)))
  with pytest.raises(ValueError, match="differ in shape"):
    r.add_line("l", np.arange(3), np.arange(4), "x", "y")
  assert plt.get_fignums() == []
