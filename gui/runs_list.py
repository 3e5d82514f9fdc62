"""The runs list: every run folder with its state, progress and final evaluation.

Rows come from core's run folders (list_runs), so runs started from the CLI, or left behind by a
crash, appear like the app's own. A refresh costs one stat() per run and a status.json read only
for runs whose status changed; the spec (for the display name) is parsed once per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QModelIndex, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QStyledItemDelegate

from core.jobs import JobSpec, Run, list_runs
from core.jobs.runs import LIVE_STATES
from gui.table_model import ListTableModel

# State -> (colour, short description). Colour-blind-safe pairs; the state is also written out.
STATE_STYLE: dict[str, tuple[str, str]] = {
    "queued": ("#8c8c8c", "waiting for the runner"),
    "running": ("#009E73", "training now"),
    "paused": ("#E69F00", "paused: Resume continues it"),
    "done": ("#0072B2", "finished"),
    "failed": ("#D55E00", "stopped by an error"),
    "cancelled": ("#6b6b6b", "cancelled: Resume from checkpoint continues it"),
    "interrupted": ("#CC79A7", "its process died: Resume from checkpoint continues it"),
}
RESUMABLE = ("interrupted", "cancelled", "failed")


def _dot(colour: str, hollow: bool = False) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QColor(colour))
    painter.setBrush(Qt.BrushStyle.NoBrush if hollow else QColor(colour))
    painter.drawEllipse(QRectF(1.5, 1.5, 9, 9))
    painter.end()
    return QIcon(pixmap)


def _swatch(colour: QColor) -> QIcon:
    pixmap = QPixmap(14, 12)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.fillRect(0, 4, 14, 4, colour)
    painter.end()
    return QIcon(pixmap)


@dataclass
class RunRow:
    run: Run
    name: str
    state: str
    step: int = 0
    total: int = 0
    message: str = ""
    error: str = ""
    evaluation: dict = field(default_factory=dict)
    created: float = 0.0
    checkpoint: bool = False
    spec: Optional[JobSpec] = None  # None: spec.toml cannot be read
    status: dict = field(default_factory=dict)

    @property
    def spec_ok(self) -> bool:
        return self.spec is not None

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class RunReader:
    """Reads RunRows, re-reading a run's status.json only when its mtime changed."""

    def __init__(self, root: Optional[Path] = None):
        self.root = root
        self._specs: dict[str, Optional[JobSpec]] = {}
        self._status: dict[str, tuple[int, dict, bool]] = {}  # id -> (mtime_ns, status, has checkpoint)

    def read(self) -> list[RunRow]:
        rows = []
        for run in list_runs(self.root):
            rows.append(self.row(run))
        alive = {r.id for r in rows}
        for cache in (self._specs, self._status):
            for key in [k for k in cache if k not in alive]:
                del cache[key]
        return rows

    def row(self, run: Run) -> RunRow:
        if run.id not in self._specs:
            try:
                self._specs[run.id] = run.spec
            except Exception:  # noqa: BLE001 - a broken spec still lists the run
                self._specs[run.id] = None
        spec = self._specs[run.id]
        name = spec.display_name() if spec is not None else run.id
        try:
            mtime = os.stat(run.folder / "status.json").st_mtime_ns
        except OSError:
            mtime = -1
        cached = self._status.get(run.id)
        if cached is None or cached[0] != mtime:
            status = run.status()
            cached = (mtime, status, bool(run.checkpoints()))
            self._status[run.id] = cached
        _, status, checkpoint = cached
        state = run.effective_state(status)  # a live state is re-checked: pid and heartbeat age
        evaluation = status.get("evaluation") or {}
        return RunRow(run=run, name=name, state=state, step=int(status.get("step") or 0),
                      total=int(status.get("total_steps") or 0), message=str(status.get("message") or ""),
                      error=str(status.get("error") or ""),
                      evaluation=evaluation if isinstance(evaluation, dict) else {},
                      created=float(status.get("created") or 0.0), checkpoint=checkpoint, spec=spec,
                      status=status)


class RunsModel(ListTableModel):
    COLUMNS = ("Run", "State", "Step", "EV", "L0")
    RowRole = Qt.ItemDataRole.UserRole

    def __init__(self, colour_of: Callable[[str], Optional[QColor]] = lambda _id: None, parent=None):
        self.colour_of = colour_of
        self._icons = {state: _dot(colour, hollow=state in ("queued", "interrupted"))
                       for state, (colour, _) in STATE_STYLE.items()}
        super().__init__(parent)

    HEADER_TIPS = ("The run's name (its folder name if unnamed); the colour of its curves when shown",
                   "queued, running, paused, done, failed, cancelled or interrupted",
                   "Training step reached / total steps",
                   "Explained variance on held-out documents (when done)",
                   "L0: average active features per token on held-out documents (when done)")

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.ToolTipRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADER_TIPS[section]
        return super().headerData(section, orientation, role)

    def update_rows(self, rows: list[RunRow]) -> bool:
        """Replace the rows. Same runs in the same order: update in place (selection kept) and
        return False; otherwise reset the model and return True."""
        if [r.id for r in rows] == [r.id for r in self.rows]:
            self.rows = list(rows)
            if rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self.COLUMNS) - 1))
            return False
        self.set_rows(rows)
        return True

    def row_of(self, run_id: str) -> int:
        for i, r in enumerate(self.rows):
            if r.id == run_id:
                return i
        return -1

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row: RunRow = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            ev, l0 = row.evaluation.get("explained_variance"), row.evaluation.get("l0")
            return (row.name, row.state, _step_text(row),
                    f"{ev:.3f}" if isinstance(ev, (int, float)) else "",
                    f"{l0:.1f}" if isinstance(l0, (int, float)) else "")[col]
        if role == Qt.ItemDataRole.DecorationRole:
            if col == 0:
                colour = self.colour_of(row.id)
                return _swatch(colour) if colour is not None else None
            if col == 1:
                return self._icons.get(row.state)
        if role == Qt.ItemDataRole.ForegroundRole and col == 1:
            return QColor(STATE_STYLE.get(row.state, ("#404040", ""))[0]).darker(115)
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(row)
        if role == self.RowRole:
            return row
        return None


def _step_text(row: RunRow) -> str:
    if row.total:
        return f"{row.step:,}/{row.total:,}"
    return f"{row.step:,}" if row.step else ""


def details_html(row: RunRow, progress: str = "") -> str:
    """A few lines about a run for the panel under the list: what it trains, where it is, how
    it did on held-out data."""
    import html
    import time as _time

    def esc(text) -> str:
        return html.escape(str(text))

    colour = STATE_STYLE.get(row.state, ("#404040", ""))[0]
    lines = [f"<b>{esc(row.name)}</b> &nbsp;<span style='color:{colour}'>● {esc(row.state)}</span>"]
    message = progress if row.state == "running" and progress else (row.error or row.message)
    if message:
        lines.append(esc(message))
    spec = row.spec
    if spec is not None and spec.kind == "student":
        s, t = spec.student, spec.train
        target = {"tokens": "token-level", "pooled": "pooled"}.get(s.target, s.target)
        lines.append(esc(f"Student {s.n_layers} layers x {s.d_hidden}, {target} targets · {spec.data.teacher} · "
                         f"{spec.data.hook} · {spec.data.corpus}"))
        lines.append(esc(f"lr {t.lr:g} · {t.batch_size:,} documents a step · at most {t.epochs} epochs"))
    elif spec is not None and spec.kind == "sae":  # the pair jobs add their own line (training_view)
        sae = spec.sae
        arch = {"topk": "TopK", "batchtopk": "BatchTopK", "relu": "ReLU + L1"}.get(sae.get("architecture"),
                                                                                  sae.get("architecture"))
        what = f"{arch}, {sae.get('d_sae', 0):,} features"
        if "k" in sae and sae.get("architecture") in ("topk", "batchtopk"):
            what += f", k {sae['k']}"
        lines.append(f"{esc(what)} · {esc(spec.data.teacher)} · {esc(spec.data.hook)} · {esc(spec.data.corpus)}")
        t = spec.train
        lr = f"lr {t.lr:g}" if t.lr is not None else f"lr {t.resolved_lr(int(sae.get('d_sae', 16384))):.2g} (auto)"
        lines.append(esc(f"{lr} · {t.batch_size:,} tokens a step · {t.total_tokens:,} tokens"))
    times = []
    started = row.status.get("started") or row.created
    if started:
        times.append("started " + _time.strftime("%Y-%m-%d %H:%M", _time.localtime(float(started))))
    if row.status.get("checkpoint_step"):
        times.append(f"checkpoint at step {int(row.status['checkpoint_step']):,}")
    if times:
        lines.append(esc(" · ".join(times)))
    ev = row.evaluation
    parts = []
    for key, label, fmt in (("val_cosine", "cosine", "{:.3f}"), ("val_mse", "MSE", "{:.3f}"),
                            ("explained_variance", "EV", "{:.3f}"), ("l0", "L0", "{:.1f}"),
                            ("dead_fraction", "dead", "{:.1%}"), ("loss_recovered", "loss recovered", "{:.3f}")):
        if isinstance(ev.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(ev[key])}")
    if parts:
        lines.append("held out: " + esc(" · ".join(parts)))
    return "<br>".join(lines)


def _tooltip(row: RunRow) -> str:
    lines = [row.name, f"folder: {row.run.folder}",
             f"state: {row.state} ({STATE_STYLE.get(row.state, ('', ''))[1]})"]
    if row.message:
        lines.append(f"status: {row.message}")
    if row.error and row.error != row.message:
        lines.append(f"error: {row.error}")
    if row.total:
        lines.append(f"step {row.step:,} of {row.total:,}")
    if row.checkpoint:
        lines.append("has a checkpoint")
    for key, label in (("explained_variance", "explained variance"), ("l0", "L0"),
                       ("dead_fraction", "dead fraction"), ("loss_recovered", "loss recovered")):
        value = row.evaluation.get(key)
        if isinstance(value, (int, float)):
            lines.append(f"{label}: {value:.4g} (held out)")
    if not row.spec_ok:
        lines.append("spec.toml cannot be read: this run cannot be cloned or resumed")
    return "\n".join(lines)


class ProgressDelegate(QStyledItemDelegate):
    """The step column as text over a thin bar (step / total), in the state's colour."""

    def paint(self, painter: QPainter, option, index) -> None:
        row: RunRow = index.data(RunsModel.RowRole)
        if row is not None and row.total:
            fraction = max(0.0, min(1.0, row.step / row.total))
            painter.save()
            rect = QRectF(option.rect).adjusted(3, option.rect.height() - 6, -3, -3)
            painter.fillRect(rect, QColor("#e6e6e6"))
            rect.setWidth(rect.width() * fraction)
            colour = QColor(STATE_STYLE.get(row.state, ("#808080", ""))[0])
            colour.setAlpha(190)
            painter.fillRect(rect, colour)
            painter.restore()
        super().paint(painter, option, index)
