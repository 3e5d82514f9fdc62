"""Live training curves: one plot per metric, one colour per run, smoothed over a faint raw curve.

Data flow (nothing here re-reads a whole file per tick):
  RunSeries   tails one run's metrics.jsonl from a byte offset (Run.read_metrics) into growable
              numpy columns; a resumed run re-logs the steps after its checkpoint, and the last
              row written for a step wins (as in Run.metrics()).
  CurvesPanel owns the plots. For each (run, metric) it makes two PlotDataItems once, a faint
              raw curve and the smoothed curve, and afterwards only calls setData on them, from a
              timer, for the runs whose data changed. Plots clip to the view and downsample
              ("peak") so a 100,000-point curve draws about as fast as a short one.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGridLayout, QWidget

# Metrics a run logs (core.dictionaries.train.batch_metrics), with a title for the plot.
METRICS: dict[str, str] = {
    "loss": "Loss",
    "mse": "Reconstruction MSE",
    "explained_variance": "Explained variance",
    "l0": "L0 (active features per token)",
    "dead_fraction": "Dead features (fraction)",
    "l1": "L1 of feature activations",
    "aux": "AuxK loss",
    "l1_penalty": "L1 penalty",
    "threshold": "Threshold (mean)",
    "lr": "Learning rate",
    "val_mse": "Validation MSE (student vs teacher, z-space)",
    "val_cosine": "Validation cosine (student vs teacher)",
    "val_loss": "Held-out next-token loss",
    "lm_loss": "Next-token loss (training batch)",
    "val_kl": "Held-out KL to the model distilled from",
    "fve_base": "Explained variance (base)",
    "fve_variant": "Explained variance (variant)",
    "mse_base": "Reconstruction MSE (base, normalized)",
    "mse_variant": "Reconstruction MSE (variant, normalized)",
}
DEFAULT_METRICS = ("loss", "explained_variance", "l0", "dead_fraction")
KIND_METRICS = {"sae": DEFAULT_METRICS, "student": ("loss", "val_mse", "val_cosine"),  # by job kind
                "variant": ("loss", "val_loss", "lr"),
                "crosscoder": ("loss", "fve_base", "fve_variant", "l0", "dead_fraction")}

# x axis choices: key in the metrics rows, axis label.
X_MODES: dict[str, tuple[str, str]] = {
    "step": ("step", "step"),
    "time": ("time", "training time (s, pauses left out)"),
    "wall": ("wall", "wall-clock time"),
}

# Colour-blind-friendly, distinct on white (Okabe-Ito, then tab10 extras).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7f7f7f",
           "#8c564b", "#bcbd22", "#000000"]
DOWNSAMPLE_PER_PIXEL = 2  # peak buckets per pixel (each gives a min and a max point)
RAW_ALPHA = 70  # of 255: the unsmoothed curve is a faint band under the smoothed one


# ==================================================================================== smoothing

def ema(y: np.ndarray, weight: float, block: int = 128) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with `weight` (0..1), debiased
    (divided by 1 - weight**count) so the start is not pulled towards zero. Non-finite values
    pass through unsmoothed and do not disturb the average.

    Vectorized in blocks: inside a block of B points the average from a zero start is a matrix
    product with the B x B lower-triangular matrix of weight powers; the carry between blocks is
    a loop over n/B blocks (under 1 ms for 100,000 points)."""
    y = np.asarray(y, dtype=np.float64)
    if weight <= 0 or y.size == 0:
        return y.copy()
    weight = min(float(weight), 0.999)
    finite = np.isfinite(y)
    all_finite = bool(finite.all())
    v = y if all_finite else y[finite]
    n = v.size
    out = np.empty_like(y)
    if n == 0:
        out[:] = y
        return out
    # Averaging y - y[0] and adding y[0] back keeps a constant series exactly constant
    # (a flat line must not pick up rounding noise, which autoscaling would blow up).
    base = float(v[0])
    k = -(-n // block)
    padded = np.zeros(k * block)
    padded[:n] = v - base
    lags = np.arange(block)
    diff = lags[:, None] - lags[None, :]
    tri = np.where(diff >= 0, (1 - weight) * np.exp(np.maximum(diff, 0) * math.log(weight)), 0.0)  # [j, i]
    local = padded.reshape(k, block) @ tri.T  # EMA inside each block from a zero start
    decay = np.exp((lags + 1) * math.log(weight))  # how the carry into a block fades across it
    carry = 0.0
    for b in range(k):
        local[b] += decay * carry
        carry = local[b, -1]
    s = local.reshape(-1)[:n]
    # Debias: divide by 1 - weight**count, which is 1 to double precision after ~37/-log10(w).
    m = min(n, int(40 / -math.log10(weight)) + 1)
    s[:m] /= -np.expm1(np.arange(1, m + 1) * math.log(weight))
    s += base
    if all_finite:
        return s
    out[:] = y
    out[finite] = s
    return out


# ==================================================================================== data

CHUNK_BYTES = 32 * 1024  # read per call while catching up with a long file (~100-450 rows, ~5 ms)
POLL_BUDGET_S = 0.015  # GUI-thread time one poll may spend reading before it yields
REDRAW_WHILE_LOADING_S = 0.5
CATCH_UP_PAUSE_MS = 10  # between slices, so other timers and input get their turn


def read_rows(path: Path, offset: int, max_bytes: Optional[int] = None) -> tuple[list[dict], int, bool]:
    """Run.read_metrics with a size limit: the whole rows appended after byte `offset`, at most
    about `max_bytes` of them (always whole lines), the offset to read from next, and whether
    more is already there. Torn lines (a killed writer) are skipped; a line still being written
    is left for the next call. Parsing 100,000 rows takes ~1 s here, so a long run is read in
    slices between which the event loop runs."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(-1 if max_bytes is None else max_bytes)
            more = max_bytes is not None and len(data) == max_bytes
            if more and not data.endswith(b"\n"):
                data += f.readline()  # finish the line the limit cut
    except FileNotFoundError:
        return [], offset, False
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + end, more


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


class RunSeries:
    """One run's logged rows as numpy columns, grown by tailing metrics.jsonl."""

    def __init__(self, run):
        self.run = run
        self.offset = 0
        self.n = 0
        self._cols: dict[str, np.ndarray] = {}
        self.version = 0  # bumped on every change (views compare it)
        self.behind = False  # the last poll stopped at its size limit: more rows are waiting

    def keys(self) -> list[str]:
        return list(self._cols)

    def column(self, key: str) -> Optional[np.ndarray]:
        col = self._cols.get(key)
        return None if col is None else col[:self.n]

    def poll(self, max_bytes: Optional[int] = CHUNK_BYTES) -> bool:
        """Read (up to about max_bytes of) what was appended since the last poll. True when
        there are new rows; `behind` says whether more are waiting."""
        rows, self.offset, self.behind = read_rows(self.run.folder / "metrics.jsonl", self.offset, max_bytes)
        if not rows:
            return False
        self.add_rows(rows)
        return True

    def add_rows(self, rows: list[dict]) -> None:
        m = len(rows)
        keys = set(self._cols) | {"step"}
        for k in set().union(*rows) - keys:  # a new column if its (first) value is a number
            sample = next(r[k] for r in rows if k in r)
            if isinstance(sample, (int, float)) and not isinstance(sample, bool):
                keys.add(k)
        keys = sorted(keys)
        try:  # the common case, numbers and absent keys (None -> NaN), in one go
            table = np.array([[r.get(k) for k in keys] for r in rows], dtype=np.float64).reshape(m, len(keys))
            new = {k: table[:, i] for i, k in enumerate(keys)}
        except (TypeError, ValueError):  # a string or a list somewhere: cell by cell
            new = {k: np.fromiter((_number(r.get(k)) for r in rows), np.float64, m) for k in keys}
        steps = new["step"]
        if np.isnan(steps).any():  # a row without a step: place it after the one before
            steps = np.where(np.isnan(steps), np.arange(self.n, self.n + m), steps)
            new["step"] = steps
        last = self._cols["step"][self.n - 1] if self.n else -math.inf
        if steps[0] > last and (m == 1 or bool(np.all(np.diff(steps) > 0))):
            self._append(new, m)
        else:
            self._rebuild(new, m)
        self.version += 1

    def _append(self, new: dict[str, np.ndarray], m: int) -> None:
        need = self.n + m
        for k, values in new.items():
            col = self._cols.get(k)
            if col is None:
                col = np.full(max(need, 64), np.nan)
                self._cols[k] = col
            elif col.size < need:
                grown = np.full(max(need, 2 * col.size), np.nan)
                grown[:self.n] = col[:self.n]
                col = self._cols[k] = grown
            col[self.n:need] = values  # `new` has every known column (NaN where a row lacks it)
        self.n = need

    def _rebuild(self, new: dict[str, np.ndarray], m: int) -> None:
        """Old rows + new rows, keeping a row only if no later row has the same or a smaller
        step (a resume re-logs from its checkpoint: the later attempt wins)."""
        total = {k: np.concatenate([self.column(k) if k in self._cols else np.full(self.n, np.nan),
                                    new.get(k, np.full(m, np.nan))]) for k in set(self._cols) | set(new)}
        steps = total["step"]
        later_min = np.append(np.minimum.accumulate(steps[::-1])[::-1][1:], math.inf)
        keep = steps < later_min
        self._cols = {k: np.ascontiguousarray(v[keep]) for k, v in total.items()}
        self.n = int(keep.sum())


# ==================================================================================== plots

class TimeAxis(pg.AxisItem):
    """Seconds shown as m:ss or h:mm:ss."""

    def tickStrings(self, values, scale, spacing):
        out = []
        for v in values:
            s = int(round(v * scale))
            sign, s = ("-" if s < 0 else ""), abs(s)
            h, rem = divmod(s, 3600)
            out.append(f"{sign}{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{sign}{rem // 60}:{rem % 60:02d}")
        return out


@dataclass
class _Curve:
    raw: pg.PlotDataItem
    smooth: pg.PlotDataItem
    version: int = -1  # the series version last drawn


class MetricPlot(pg.PlotWidget):
    """One metric's plot: the curves of every shown run."""

    def __init__(self, metric: str, parent=None):
        super().__init__(parent, background="w")
        self.metric_key = metric  # not "metric": that would shadow QWidget.metric(), a virtual Qt calls (crash)
        self.curves: dict[str, _Curve] = {}
        item = self.getPlotItem()
        item.setTitle(f"<span style='color:#202020; font-size:10pt'>{METRICS.get(metric, metric)}</span>")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setMenuEnabled(False, enableViewBoxMenu=True)  # no pyqtgraph "Plot Options" (log etc.)
        # Downsampling and clip-to-view are set per curve (tune_downsampling), not here: the
        # PlotItem would re-apply its own settings to every curve whenever one of them changes.
        vb = item.getViewBox()
        vb.sigStateChanged.connect(lambda _vb: self.tune_downsampling())
        vb.sigResized.connect(lambda _vb: self.tune_downsampling())
        for side in ("left", "bottom"):
            axis = item.getAxis(side)
            axis.setTextPen("#404040")
            axis.setPen("#909090")
        item.getAxis("left").setWidth(52)
        self.legend = item.addLegend(offset=(-8, 8), labelTextColor="#202020", labelTextSize="8pt",
                                     brush=pg.mkBrush(255, 255, 255, 200), pen=pg.mkPen("#c0c0c0"))
        self.legend.setVisible(False)
        self.scene().contextMenu = []  # our own export entries replace pyqtgraph's dialog
        self.setMinimumSize(220, 150)

    def add_curve(self, run_id: str, colour: QColor, name: str) -> _Curve:
        faint = QColor(colour)
        faint.setAlpha(RAW_ALPHA)
        raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1))
        smooth = pg.PlotDataItem(pen=pg.mkPen(colour, width=2), name=name)
        for curve in (raw, smooth):
            curve.setClipToView(True)
            curve.setDownsampling(ds=1, auto=False, method="peak")
            self.addItem(curve)
        curve = _Curve(raw, smooth)
        self.curves[run_id] = curve
        return curve

    def tune_downsampling(self) -> None:
        """Peak downsampling to about DOWNSAMPLE_PER_PIXEL buckets per pixel of width.

        While the x axis follows the data (auto range), the factor comes from the number of
        points and the plot's width: pyqtgraph's auto factor would depend on the view range,
        which with auto range depends on the downsampled data's bounds, and for factors under
        100 that loop can oscillate forever, repainting without end (a frozen window). Once
        the user zooms or pans (x range set by hand), pyqtgraph's auto factor and clip-to-view
        take over, so zooming into a long curve shows its detail."""
        vb = self.getPlotItem().getViewBox()
        follow = vb.autoRangeEnabled()[0]
        buckets = max(1.0, vb.width() * DOWNSAMPLE_PER_PIXEL)
        for curve in self.curves.values():
            for item in (curve.raw, curve.smooth):
                if follow:
                    n = 0 if item.xData is None else len(item.xData)
                    item.setDownsampling(ds=max(1, int(n / buckets)), auto=False, method="peak")
                else:
                    item.setDownsampling(auto=True, method="peak")

    def remove_curve(self, run_id: str) -> None:
        curve = self.curves.pop(run_id, None)
        if curve is not None:
            self.removeItem(curve.raw)
            self.removeItem(curve.smooth)  # also takes it out of the legend

    def set_x_mode(self, mode: str) -> None:
        item = self.getPlotItem()
        axis = {"time": lambda: TimeAxis("bottom"), "wall": lambda: pg.DateAxisItem("bottom")}.get(
            mode, lambda: pg.AxisItem("bottom"))()
        axis.setTextPen("#404040")
        axis.setPen("#909090")
        item.setAxisItems({"bottom": axis})
        item.setLabel("bottom", X_MODES[mode][1], color="#404040")
        item.enableAutoRange()


class CurvesPanel(QWidget):
    """A grid of MetricPlots over the shown runs. Call `poll()` from a timer: it reads what the
    shown runs appended and redraws only the curves whose data changed."""

    redrawn = Signal()  # the curves show the data read so far

    def __init__(self, metrics: Iterable[str] = DEFAULT_METRICS, parent=None):
        super().__init__(parent)
        self.series: dict[str, RunSeries] = {}
        self.names: dict[str, str] = {}
        self.colours: dict[str, QColor] = {}
        self.order: list[str] = []  # shown run ids, in the runs list's order
        self.weight = 0.6
        self.log_y = False
        self.x_mode = "step"
        self.plots: dict[str, MetricPlot] = {}
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(6)
        self.menu_hook = None  # callable(plot) adding actions to a plot's context menu
        self._dirty = False
        self._last_redraw = 0.0
        self._catch_up = QTimer(self, singleShot=True, interval=CATCH_UP_PAUSE_MS)
        self._catch_up.timeout.connect(self.poll)
        self._draw_timer = QTimer(self, singleShot=True, interval=0)
        self._draw_timer.timeout.connect(self._draw_step)
        self.set_metrics(list(metrics))

    # -- settings --------------------------------------------------------------------------------

    def set_metrics(self, metrics: list[str]) -> None:
        for metric in [m for m in self.plots if m not in metrics]:
            plot = self.plots.pop(metric)
            self.grid.removeWidget(plot)
            plot.setParent(None)
            plot.deleteLater()
        for metric in metrics:
            if metric not in self.plots:
                plot = MetricPlot(metric)
                plot.set_x_mode(self.x_mode)
                plot.getPlotItem().setLogMode(y=self.log_y)
                for run_id in self.order:
                    plot.add_curve(run_id, self.colours[run_id], self.names.get(run_id, run_id))
                if self.menu_hook is not None:
                    self.menu_hook(plot)
                self.plots[metric] = plot
        self.plots = {m: self.plots[m] for m in metrics}
        columns = 1 if len(metrics) == 1 else 2
        for i, metric in enumerate(metrics):
            self.grid.addWidget(self.plots[metric], i // columns, i % columns)
        self._update_legends()
        self._redraw(force=True)

    def set_smoothing(self, weight: float) -> None:
        self.weight = max(0.0, min(0.99, float(weight)))
        self._redraw(force=True)

    def set_log_y(self, on: bool) -> None:
        self.log_y = bool(on)
        for plot in self.plots.values():
            plot.getPlotItem().setLogMode(y=self.log_y)
            plot.getPlotItem().enableAutoRange()
        self._redraw(force=True)

    def set_x_mode(self, mode: str) -> None:
        if mode not in X_MODES:
            raise ValueError(f"x mode must be one of {', '.join(X_MODES)}")
        self.x_mode = mode
        for plot in self.plots.values():
            plot.set_x_mode(mode)
        self._redraw(force=True)

    # -- runs ------------------------------------------------------------------------------------

    def set_runs(self, runs: list, names: Optional[dict[str, str]] = None) -> None:
        """Show these runs (core Run objects), in this order. Curves of runs no longer shown
        are removed; a newly shown run gets the first palette colour no shown run uses."""
        names = names or {}
        ids = [r.id for r in runs]
        for run_id in [i for i in self.order if i not in ids]:
            for plot in self.plots.values():
                plot.remove_curve(run_id)
            self.series.pop(run_id, None)
            self.colours.pop(run_id, None)
        for run in runs:
            self.names[run.id] = names.get(run.id, self.names.get(run.id, run.id))
            if run.id in self.series:
                continue
            used = {c.name() for c in self.colours.values()}
            free = [c for c in PALETTE if QColor(c).name() not in used]
            self.colours[run.id] = QColor(free[0] if free else PALETTE[len(self.colours) % len(PALETTE)])
            self.series[run.id] = RunSeries(run)
            for plot in self.plots.values():
                plot.add_curve(run.id, self.colours[run.id], self.names[run.id])
        self.order = ids
        for plot in self.plots.values():  # z order follows the list: the first run on top
            for z, run_id in enumerate(reversed(ids)):
                plot.curves[run_id].raw.setZValue(z)
                plot.curves[run_id].smooth.setZValue(len(ids) + z)
        self._update_legends()
        self.poll()

    def stop(self) -> None:
        """Stop reading (the catch-up timer); a later poll() starts again."""
        self._catch_up.stop()
        self._draw_timer.stop()

    def colour(self, run_id: str) -> Optional[QColor]:
        return self.colours.get(run_id)

    def _update_legends(self) -> None:
        first = next(iter(self.plots.values()), None)
        for plot in self.plots.values():
            plot.legend.setVisible(plot is first and len(self.order) > 1)

    # -- data ------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Tail every shown run's metrics and redraw what changed. Returns True if anything did.

        A run with a long backlog (just selected, thousands of rows) is read in slices for up
        to POLL_BUDGET_S; the rest follows CATCH_UP_PAUSE_MS later, so the event loop runs in
        between, and its curves are redrawn at most every REDRAW_WHILE_LOADING_S meanwhile."""
        t0 = time.perf_counter()
        changed = False
        for run_id in self.order:
            series = self.series[run_id]
            changed |= series.poll()
            while series.behind and time.perf_counter() - t0 < POLL_BUDGET_S:
                series.poll()
        self._dirty |= changed
        behind = self.loading
        if behind:
            self._catch_up.start()
        if self._dirty and (not behind or time.perf_counter() - self._last_redraw > REDRAW_WHILE_LOADING_S):
            self._redraw()
        return changed

    @property
    def loading(self) -> bool:
        """Some shown run's file is not read to its end yet."""
        return any(self.series[i].behind for i in self.order)

    def _redraw(self, force: bool = False) -> None:
        """Draw the curves whose data changed (all of them when forced), soon: a zero-delay timer
        sets the data of one plot per pass, so the event loop paints each plot before the next
        one is set, instead of painting all of them at once (with 100,000-point curves a plot
        costs ~5 ms to set and ~20 ms to paint here)."""
        if force:
            for plot in self.plots.values():
                for curve in plot.curves.values():
                    curve.version = -1
        self._dirty = False
        self._last_redraw = time.perf_counter()
        if not self._draw_timer.isActive():
            self._draw_timer.start()

    def _draw_step(self) -> None:
        for plot in self.plots.values():  # one plot a pass: it is painted before the next is set
            if self._draw_plot(plot):
                break
        if any(self._stale(plot) for plot in self.plots.values()):
            self._draw_timer.start()
        else:
            self.redrawn.emit()

    def flush(self) -> None:
        """Draw everything pending now (exports and tests)."""
        self._draw_timer.stop()
        drew = [self._draw_plot(plot) for plot in self.plots.values()]
        if any(drew):
            self.redrawn.emit()

    def _stale(self, plot: MetricPlot) -> bool:
        return any(plot.curves[i].version != self.series[i].version for i in self.order)

    def _draw_plot(self, plot: MetricPlot) -> bool:
        xkey = X_MODES[self.x_mode][0]
        drew = False
        for run_id in self.order:
            series = self.series[run_id]
            curve = plot.curves[run_id]
            if curve.version == series.version:
                continue
            x, y = self.curve_data(run_id, plot.metric_key, xkey)
            smooth = ema(y, self.weight) if self.weight > 0 else y
            # connect="auto" (the default) passes skipFiniteCheck to the curve when the data
            # is all finite; downsampling follows below (MetricPlot.tune_downsampling).
            curve.raw.setData(x, y)
            curve.raw.setVisible(self.weight > 0)
            curve.smooth.setData(x, smooth)
            curve.version = series.version
            drew = True
        if drew:
            plot.tune_downsampling()
        return drew

    def curve_data(self, run_id: str, metric: str, xkey: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, raw y) of a run's metric: only the rows that logged it."""
        series = self.series[run_id]
        x = series.column(xkey or X_MODES[self.x_mode][0])
        y = series.column(metric)
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        ok = ~np.isnan(y) & ~np.isnan(x)
        if not ok.all():
            x, y = x[ok], y[ok]
        return x, y

    def point_count(self, run_id: str, metric: str) -> int:
        """Points the (smoothed) curve of `run_id` in `metric`'s plot holds now."""
        plot = self.plots.get(metric)
        if plot is None or run_id not in plot.curves:
            return 0
        y = plot.curves[run_id].smooth.yData
        return 0 if y is None else len(y)

    # -- export ----------------------------------------------------------------------------------

    def export_plot(self, metric: str, path: str | Path, width: int = 1200) -> Path:
        """The plot of `metric` as a PNG (`width` pixels wide) or SVG, by the path's suffix."""
        path = Path(path)
        plot = self.plots[metric]
        self.flush()
        if path.suffix.lower() == ".svg":
            _write_svg(plot, path)
        else:
            import pyqtgraph.exporters as exporters

            exporter = exporters.ImageExporter(plot.getPlotItem())
            exporter.parameters()["width"] = int(width)
            exporter.parameters()["antialias"] = True
            exporter.export(str(path))
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError(f"could not write {path}")
        return path

    def write_csv(self, path: str | Path, metrics: Optional[list[str]] = None) -> Path:
        """The shown data: one row per (run, step) with run, step, time, wall, and for each
        metric its raw and smoothed value (the smoothing the slider sets; empty where absent)."""
        metrics = list(metrics or self.plots)
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            header = ["run", "step", "time", "wall"]
            for m in metrics:
                header += [m, f"{m}_smoothed"]
            writer.writerow(header)
            for run_id in self.order:
                series = self.series[run_id]
                n = series.n
                base = [series.column(k) if series.column(k) is not None else np.full(n, np.nan)
                        for k in ("step", "time", "wall")]
                values = []
                for m in metrics:
                    y = series.column(m)
                    if y is None:
                        y = np.full(n, np.nan)
                    smooth = ema(y, self.weight) if self.weight > 0 else y
                    values += [y, smooth]
                for i in range(n):
                    cells = [run_id, _fmt(base[0][i], int_ok=True), _fmt(base[1][i]), _fmt(base[2][i])]
                    writer.writerow(cells + [_fmt(v[i], smoothed=j % 2 == 1) for j, v in enumerate(values)])
        return path


def _write_svg(plot: MetricPlot, path: Path) -> None:
    """The plot as vector SVG through Qt's own SVG generator. (pyqtgraph 0.14's SVGExporter
    cannot parse the closing 'Z' that Qt 6.11 writes in paths: pyqtgraph issue #3485.)"""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    source = plot.getPlotItem().sceneBoundingRect()
    target = QRectF(0, 0, source.width(), source.height())
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(target.size().toSize())
    generator.setViewBox(target)
    generator.setTitle(METRICS.get(plot.metric_key, plot.metric_key))
    generator.setDescription("distillscope training curves")
    painter = QPainter()
    if not painter.begin(generator):
        raise OSError(f"could not write {path}")
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        plot.scene().render(painter, target, source)
    finally:
        painter.end()


def _fmt(value: float, int_ok: bool = False, smoothed: bool = False) -> str:
    """Raw values exactly as logged; smoothed ones to 10 significant digits."""
    if not math.isfinite(value):
        return ""
    if int_ok and value == int(value):
        return str(int(value))
    return f"{value:.10g}" if smoothed else repr(float(value))
