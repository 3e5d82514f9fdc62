"""Colours and small layouts shared by the views: the sequential scale for token values, label
tag colours, placeholders and a titled pane under another."""

from __future__ import annotations

import zlib

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QLabel, QSplitter, QStackedWidget, QStyledItemDelegate, QVBoxLayout, QWidget

# A light-to-dark blue scale (ColorBrewer "Blues"): the light end keeps dark text readable, and
# it stays readable for the common red-green colour blindness.
SCALE_STOPS = [(0.0, "#f7fbff"), (0.25, "#c6dbef"), (0.5, "#6baed6"), (0.75, "#2171b5"),
               (1.0, "#08306b")]
# Token highlighting by one dictionary feature (ColorBrewer "Oranges"): a different hue from the
# residual-norm scale, so a glance tells which of the two the tokens show.
FEATURE_SCALE_STOPS = [(0.0, "#fff5eb"), (0.25, "#fdd0a2"), (0.5, "#fd8d3c"), (0.75, "#d94801"),
                       (1.0, "#7f2704")]
BOS_BACKGROUND = "#d9d9d9"
BOS_FOREGROUND = "#444444"

# Tag colours for document labels: distinct, light enough for dark text.
_TAG_COLOURS = ["#fbb4ae", "#b3cde3", "#ccebc5", "#decbe4", "#fed9a6", "#ffffcc", "#e5d8bd",
                "#fddaec", "#c7e9c0", "#d9d9f3", "#f2f2f2", "#bfe6e6"]


def scale_colour(t: float, stops=None) -> QColor:
    """Colour of a value already normalized to 0..1 (clamped), on `stops` (default SCALE_STOPS)."""
    stops = stops or SCALE_STOPS
    t = min(max(t, 0.0), 1.0)
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            a, b = QColor(c0), QColor(c1)
            f = (t - t0) / (t1 - t0)
            return QColor(round(a.red() + f * (b.red() - a.red())),
                          round(a.green() + f * (b.green() - a.green())),
                          round(a.blue() + f * (b.blue() - a.blue())))
    return QColor(stops[-1][1])


def text_colour_on(background: QColor) -> str:
    """Black or white, whichever reads better on `background` (by perceived luminance)."""
    lum = 0.299 * background.red() + 0.587 * background.green() + 0.114 * background.blue()
    return "#000000" if lum > 140 else "#ffffff"


def label_colour(label: str) -> QColor:
    """A stable colour per label (crc32, not hash(): Python salts str hashes per process)."""
    return QColor(_TAG_COLOURS[zlib.crc32(label.encode("utf-8")) % len(_TAG_COLOURS)])


class TagDelegate(QStyledItemDelegate):
    """Paints a cell's text as a rounded coloured tag (for document labels)."""

    def paint(self, painter: QPainter, option, index) -> None:
        text = index.data(Qt.ItemDataRole.DisplayRole)
        if not text:
            super().paint(painter, option, index)
            return
        self.initStyleOption(option, index)
        option.text = ""
        option.widget.style().drawControl(option.widget.style().ControlElement.CE_ItemViewItem,
                                          option, painter, option.widget)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = option.fontMetrics
        width = min(fm.horizontalAdvance(text) + 12, option.rect.width() - 6)
        rect = QRect(option.rect.left() + 3, option.rect.center().y() - fm.height() // 2 - 1,
                     width, fm.height() + 2)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(label_colour(text))
        painter.drawRoundedRect(rect, 4, 4)
        painter.setPen(QColor("#202020"))
        shown = fm.elidedText(text, Qt.TextElideMode.ElideRight, rect.width() - 8)
        painter.drawText(rect.adjusted(6, 0, -2, 0), Qt.AlignmentFlag.AlignVCenter, shown)
        painter.restore()


class Placeholder(QStackedWidget):
    """A view that shows a grey, centred message instead of its content while it has none."""

    def __init__(self, content: QWidget, message: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel(message)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        self.label.setStyleSheet("color: #808080; font-size: 11pt; padding: 24px;")
        self.content = content
        self.addWidget(self.label)
        self.addWidget(content)

    def show_message(self, message: str) -> None:
        self.label.setText(message)
        self.setCurrentWidget(self.label)

    def show_content(self) -> None:
        self.setCurrentWidget(self.content)

    @property
    def message(self) -> str:
        return self.label.text() if self.currentWidget() is self.label else ""


def titled_split(upper: QWidget, title: QLabel, body: QWidget, sizes: list[int]) -> QSplitter:
    """`upper` above `title` and `body` (which takes the height), in a vertical splitter whose
    panes do not collapse: the document list over its text, a dashboard over its contexts."""
    lower = QWidget()
    lower_layout = QVBoxLayout(lower)
    lower_layout.setContentsMargins(0, 4, 0, 0)
    lower_layout.addWidget(title)
    lower_layout.addWidget(body, 1)
    split = QSplitter(Qt.Orientation.Vertical)
    split.addWidget(upper)
    split.addWidget(lower)
    split.setSizes(sizes)
    split.setChildrenCollapsible(False)
    return split
