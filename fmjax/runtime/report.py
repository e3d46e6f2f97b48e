"""The markdown report of a run: `<workdir>/report.md` with tables, text and PNG plots in `<workdir>/report/`.

A `Report` is built section by section (training curves, confusion matrix, masks over frames, codebook
usage, lead-time curve, ...); each plot is saved as soon as its section is added and every figure is
closed straight away, so a long run can build reports without leaking memory. `write` renders the
markdown, which links the PNGs by relative path so the workdir can be moved or copied as a whole. Every file is
written whole or not at all (`files.write_atomic`); a full disk is one `WorkdirError` line.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, and no GUI event loop in a training process.
import matplotlib.pyplot as plt
import numpy as np

from fmjax.runtime import files

REPORT_FILE = "report.md"
PLOT_DIR = "report"


def _format(value: Any) -> str:
  """A table cell: floats (Python, numpy, JAX scalars) with 4 significant digits, the rest as str."""
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if np.ndim(value) == 0 and np.asarray(value).dtype.kind == "f":
    return f"{float(value):.4g}"
  return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_format(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


class Report:
  """A markdown report under `workdir`, built by `add_*` calls and written by `write`."""

  def __init__(self, workdir: str, title: str):
    self.workdir = workdir
    self.title = title
    self._sections: list[str] = []

  # --------------------------------------------------------------------------- plumbing

  def _add(self, heading: str, body: str) -> None:
    self._sections.append(f"## {heading}\n\n{body.strip()}\n")

  def _save(self, fig: Any, heading: str) -> str:
    """Saves and closes `fig`; returns the markdown image link, relative to report.md."""
    slug = re.sub(r"[^a-z0-9]+", "_", heading.lower()).strip("_") or "plot"
    name = f"{len(self._sections):02d}_{slug}.png"
    os.makedirs(os.path.join(self.workdir, PLOT_DIR), exist_ok=True)
    png = io.BytesIO()
    try:
      fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    finally:
      plt.close(fig)
    files.write_atomic(os.path.join(self.workdir, PLOT_DIR, name), png.getvalue(), f"the report's plot {name}")
    return f"![{heading}]({PLOT_DIR}/{name})"

  # --------------------------------------------------------------------------- sections

  def add_text(self, heading: str, text: str) -> None:
    """A section of free markdown text."""
    self._add(heading, text)

  def add_table(self, heading: str, rows: Mapping[str, object]) -> None:
    """A two-column name | value table; floats with 4 significant digits."""
    self.add_rows(heading, ["name", "value"], list(rows.items()))

  def add_rows(self, heading: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table of `rows` under `header`; floats with 4 significant digits."""
    self._add(heading, _table(header, rows))

  def add_curves(self, heading: str, history: Sequence[Mapping[str, Any]], keys: Sequence[str],
                 split: str | None = None) -> None:
    """One subplot per key of value vs step, from `read_metrics` records (one line per split).

    `split` keeps only that split's records; records without a key are skipped for that key. Keys
    without any data are named in the text; with no data at all there is no plot.
    """
    records = [r for r in history if split is None or r.get("split") == split]
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for key in keys:
      for r in records:
        if key in r and r[key] is not None:
          steps, values = series.setdefault(key, {}).setdefault(str(r.get("split", "")), ([], []))
          steps.append(r["step"])
          values.append(float(r[key]))
    missing = [key for key in keys if key not in series]
    where = f" for split {split!r}" if split is not None else ""
    if not series:
      self._add(heading, f"no data{where} for {', '.join(keys) or 'any key'}.")
      return
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for ax, (key, by_split) in zip(axes[0], series.items()):
      for name, (steps, values) in by_split.items():
        ax.plot(steps, values, label=name or None)
      ax.set_title(key)
      ax.set_xlabel("step")
      if len(by_split) > 1:
        ax.legend()
    fig.tight_layout()
    text = self._save(fig, heading)
    if missing:
      text += f"\n\nno data{where} for {', '.join(missing)}."
    self._add(heading, text)

  def add_confusion(self, heading: str, confusion: np.ndarray,
                    class_names: Sequence[str] = ("normal", "abnormal")) -> None:
    """The confusion matrix (rows = label, columns = prediction) as an annotated heatmap and a table."""
    c = np.asarray(confusion)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] != len(class_names):
      raise ValueError(f"confusion matrix of shape {c.shape} does not match {len(class_names)} class names")
    fig, ax = plt.subplots(figsize=(1.2 * len(c) + 2, 1.2 * len(c) + 1.5))
    ax.imshow(c, cmap="Blues", vmin=0)
    for i, j in np.ndindex(*c.shape):
      ax.text(j, i, str(c[i, j]), ha="center", va="center",
              color="white" if c[i, j] > c.max() / 2 else "black")
    ax.set_xticks(range(len(c)), class_names)
    ax.set_yticks(range(len(c)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    link = self._save(fig, heading)
    table = _table(["label \\ predicted", *class_names], [[name, *row] for name, row in zip(class_names, c)])
    self._add(heading, f"{link}\n\n{table}")

  def add_masks(self, heading: str, predicted: np.ndarray, true: np.ndarray, frames: np.ndarray | None = None,
                max_rows: int = 6) -> None:
    """Up to `max_rows` samples in a grid with columns frame / true / predicted, and each row's IoU.

    `predicted` and `true` are binary masks (N, H, W) (nonzero = abnormal); `frames` are (N, H, W) or
    (N, H, W, 3) images, uint8 or floats in [0, 1].
    """
    predicted, true = np.asarray(predicted) > 0, np.asarray(true) > 0
    if predicted.shape != true.shape or predicted.ndim != 3:
      raise ValueError(f"masks must both be (N, H, W), got {predicted.shape} and {true.shape}")
    if frames is not None and np.shape(frames)[:3] != true.shape:
      raise ValueError(f"frames {np.shape(frames)} do not match masks {true.shape}")
    n = min(len(true), max_rows)
    if n == 0:
      self._add(heading, "no data.")
      return
    columns = ([("frame", frames)] if frames is not None else []) + [("true", true), ("predicted", predicted)]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.2 * n), squeeze=False)
    for row in range(n):
      for col, (name, images) in enumerate(columns):
        ax = axes[row, col]
        image = np.asarray(images[row])
        if image.dtype == bool:
          ax.imshow(image.astype(np.uint8), cmap="gray", vmin=0, vmax=1)
        else:
          ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
          ax.set_title(name)
    fig.tight_layout()
    link = self._save(fig, heading)
    inter = (predicted[:n] & true[:n]).sum(axis=(1, 2))
    union = (predicted[:n] | true[:n]).sum(axis=(1, 2))
    ious = ", ".join(f"{i / u:.3f}" if u else "n/a (both empty)" for i, u in zip(inter, union))
    self._add(heading, f"{link}\n\nIoU of the abnormal class per row: {ious}.")

  def add_bars(self, heading: str, values: np.ndarray, xlabel: str, ylabel: str) -> None:
    """A bar chart of `values` against their index (e.g. how often each codebook entry is used)."""
    values = np.asarray(values).ravel()
    if not values.size:
      self._add(heading, "no data.")
      return
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(np.arange(values.size), values, width=1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    self._add(heading, self._save(fig, heading))

  def add_line(self, heading: str, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str,
               marker_x: float | None = None) -> None:
    """A line plot of y against x (e.g. similarity vs lag), with an optional vertical marker at `marker_x`."""
    x, y = np.asarray(x).ravel(), np.asarray(y).ravel()
    if x.shape != y.shape:
      raise ValueError(f"x {x.shape} and y {y.shape} differ in shape")
    if not x.size:
      self._add(heading, "no data.")
      return
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(x, y)
    text = ""
    if marker_x is not None:
      marker_x = float(marker_x)
      ax.axvline(marker_x, color="tab:red", linestyle="--", label=f"{xlabel} = {marker_x:.4g}")
      ax.legend()
      text = f"\n\nmarked at {xlabel} = {marker_x:.4g}."
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    self._add(heading, self._save(fig, heading) + text)

  def add_timeline(self, heading: str, t: np.ndarray, series: Mapping[str, np.ndarray],
                   markers: Mapping[str, Sequence[float]], threshold: float | None = None,
                   xlabel: str = "time (s)") -> None:
    """Named series against time (e.g. an alarm score and a 0/1 label), vertical markers per kind
    (e.g. onsets) and an optional horizontal threshold."""
    t = np.asarray(t).ravel()
    if not t.size:
      self._add(heading, "no data.")
      return
    fig, ax = plt.subplots(figsize=(8, 3))
    for name, y in series.items():
      ax.plot(t, np.asarray(y).ravel(), label=name, linewidth=1)
    for (name, xs), color in zip(markers.items(), ("tab:orange", "tab:red", "tab:purple")):
      for k, x in enumerate(xs):
        ax.axvline(float(x), color=color, linestyle="--", linewidth=1, label=name if k == 0 else None)
    if threshold is not None:
      ax.axhline(float(threshold), color="grey", linestyle=":", label=f"threshold {float(threshold):.3g}")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="small", loc="upper right")
    self._add(heading, self._save(fig, heading))

  def add_scatter(self, heading: str, x: np.ndarray, ys: Mapping[str, np.ndarray], xlabel: str, ylabel: str) -> None:
    """Points (x, y) for each named series (e.g. true vs estimated lead), with the y = x diagonal;
    non-finite points are left out and counted in the text."""
    x = np.asarray(x, np.float64).ravel()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    dropped = []
    for name, y in ys.items():
      y = np.asarray(y, np.float64).ravel()
      if y.shape != x.shape:
        plt.close(fig)
        raise ValueError(f"series {name!r} has shape {y.shape}, x has {x.shape}")
      ok = np.isfinite(x) & np.isfinite(y)
      ax.scatter(x[ok], y[ok], label=name, s=18)
      if (~ok).any():
        dropped.append(f"{name}: {int((~ok).sum())}")
    finite = x[np.isfinite(x)]
    if finite.size:
      ax.plot([finite.min(), finite.max()], [finite.min(), finite.max()], color="gray", linestyle=":", label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    text = self._save(fig, heading)
    if dropped:
      text += f"\n\nnon-finite points left out ({', '.join(dropped)})."
    self._add(heading, text)

  # --------------------------------------------------------------------------- output

  def write(self) -> str:
    """Writes `<workdir>/report.md` (title then the sections in the order added); returns its path."""
    os.makedirs(self.workdir, exist_ok=True)
    return files.write_atomic(os.path.join(self.workdir, REPORT_FILE),
                              f"# {self.title}\n\n" + "\n".join(self._sections))
