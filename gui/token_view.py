"""The inspect view's token display: tokens coloured by a per-token value, a legend and a bar plot.

Two quantities are shown: the residual norm (blue scale, range from the document itself) and, when a
dictionary feature is selected, that feature's activation (orange scale, from 0 to a fixed top such
as the feature's largest activation on the corpus, so documents can be compared).
"""

from __future__ import annotations

import html
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QLinearGradient, QPainter
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QSplitter, QTextBrowser, QVBoxLayout, QWidget

from gui.style import (BOS_BACKGROUND, BOS_FOREGROUND, FEATURE_SCALE_STOPS, SCALE_STOPS, Placeholder,
                       scale_colour, text_colour_on)

HAIR_SPACE = "\u200a"  # a thin uncoloured gap between tokens, so token boundaries are visible


SATURATE_QUANTILE = 0.98
OUTLIER_RATIO = 1.5


def value_range(values: list[float], is_bos: list[bool]) -> tuple[float, float]:
    """The colour scale over non-BOS tokens: from the smallest value to the largest, or to the
    98th percentile when the largest values are outliers (over 1.5x that percentile).

    BOS is left out because its norm is tens of times larger (NOTES: the residual norm is
    dominated by the BOS position). A few other tokens can carry such "massive activations" too
    (10x the rest in a long letter); scaled to them every other token would wash out to white,
    so they saturate at the darkest colour instead.
    """
    content = sorted(v for v, b in zip(values, is_bos) if not b)
    if not content:
        return 0.0, 1.0
    pos = SATURATE_QUANTILE * (len(content) - 1)
    i = int(pos)
    q = content[i] if i + 1 >= len(content) else content[i] + (pos - i) * (content[i + 1] - content[i])
    top = content[-1] if content[-1] <= OUTLIER_RATIO * q else q
    return content[0], top


def normalize(value: float, lo: float, hi: float) -> float:
    return 0.5 if hi - lo < 1e-12 else (value - lo) / (hi - lo)


def display_text(token: str, newline: str = "↵<br>") -> str:
    """HTML for a token's text: escaped, with newlines and tabs shown as marks (and by default a
    real break after the newline mark)."""
    out = []
    for ch in token:
        if ch == "\n":
            out.append(newline)
        elif ch == "\t":
            out.append("→")
        elif not ch.isprintable() and ch != " ":
            out.append(html.escape(repr(ch)[1:-1]))
        else:
            out.append(html.escape(ch))
    return "".join(out) or "∅"


def render_html(tokens: list[str], values: list[float], is_bos: list[bool], quantity: str,
                stops=None, fixed: Optional[tuple[float, float]] = None) -> str:
    """One span per token, background from the colour scale (`stops`; over `fixed` = (lo, hi) or
    the document's own range), tooltip with the token and value."""
    lo, hi = fixed if fixed is not None else value_range(values, is_bos)
    parts = []
    for i, (tok, value, bos) in enumerate(zip(tokens, values, is_bos)):
        if bos:
            tip = html.escape(f"BOS (beginning of sequence) · {quantity} {value:.2f} · left out of "
                              "the colour scale", quote=True)
            parts.append(f'<span style="background-color:{BOS_BACKGROUND}; color:{BOS_FOREGROUND}; '
                         f'font-size:small;" title="{tip}">&nbsp;BOS&nbsp;</span> ')
            continue
        bg = scale_colour(normalize(value, lo, hi), stops)
        tip = html.escape(f"token {i}: {tok!r} · {quantity} {value:.2f}", quote=True)
        parts.append(f'<span style="background-color:{bg.name()}; color:{text_colour_on(bg)};" '
                     f'title="{tip}">{display_text(tok)}</span>{HAIR_SPACE}')
    return ('<div style="white-space: pre-wrap; line-height: 160%; font-size: 12pt;">'
            + "".join(parts) + "</div>")


def values_no_bos(values: list[float], is_bos: list[bool]) -> list[float]:
    return [v for v, b in zip(values, is_bos) if not b] or [0.0]


class GradientBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedSize(180, 14)
        self.stops = SCALE_STOPS

    def set_stops(self, stops) -> None:
        if stops is not self.stops:
            self.stops = stops
            self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        gradient = QLinearGradient(0, 0, self.width(), 0)
        for t, colour in self.stops:
            gradient.setColorAt(t, QColor(colour))
        painter.fillRect(self.rect(), gradient)
        painter.setPen(QColor("#909090"))
        painter.drawRect(self.rect().adjusted(0, 0, -1, -1))


class TokenPanel(QWidget):
    """Header, coloured tokens, legend and a per-token bar plot for one document."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tokens: list[str] = []
        self.values: list[float] = []
        self.is_bos: list[bool] = []
        self.feature: Optional[int] = None  # the dictionary feature the tokens are coloured by
        self.header = QLabel()
        self.header.setStyleSheet("font-weight: 600; font-size: 11pt;")
        self.header.setTextFormat(Qt.TextFormat.PlainText)

        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)
        self.browser.setStyleSheet("QTextBrowser { background: white; }")
        self.browser.document().setDocumentMargin(10)

        self.lo_label, self.hi_label = QLabel(), QLabel()
        self.bos_label = QLabel()
        self.bos_label.setStyleSheet("color: #606060;")
        # Clipped rather than widening the view; the whole text is its tooltip.
        self.bos_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        legend = QHBoxLayout()
        legend.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel("residual norm")
        self.caption.setStyleSheet("color: #606060;")
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        self.caption.setMaximumWidth(260)  # a feature's long label is cut, not widening the view
        self.gradient = GradientBar()
        for w in (self.caption, self.lo_label, self.gradient, self.hi_label):
            legend.addWidget(w)
        legend.addSpacing(16)
        legend.addWidget(self.bos_label, 1)

        # Plot items are created once; a new document only calls setOpts (pyqtgraph advice).
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=True, y=True)
        self.plot.hideButtons()
        self.plot.showGrid(x=False, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "token position (BOS left out)")
        self.plot.setLabel("left", "norm")
        self.plot.setMinimumHeight(110)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.85, pen=pg.mkPen("#4a6fa5", width=0.5))
        self.plot.addItem(self.bars)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.browser)
        split.addWidget(self.plot)
        split.setSizes([300, 130])
        split.setChildrenCollapsible(False)
        body_layout.addWidget(split, 1)
        body_layout.addLayout(legend)
        self.stack = Placeholder(body, "Open a document to inspect it.")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.stack, 1)
        # A long header is clipped rather than widening the column (three columns share 1280 px).
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.header.setMinimumWidth(120)

    def show_message(self, message: str, header: str = "") -> None:
        self.tokens, self.values, self.is_bos = [], [], []
        self.feature = None
        self.header.setText(header)
        self.stack.show_message(message)

    def show_tokens(self, tokens: list[str], values: list[float], is_bos: list[bool],
                    header: str, quantity: str = "residual norm", caption: Optional[str] = None,
                    feature: Optional[int] = None, top: Optional[float] = None) -> None:
        """Colour the tokens by `values`. With `feature` set, the values are that dictionary
        feature's activations: orange scale from 0 to `top` (default: the document's largest),
        `caption` names the feature in the legend."""
        self.tokens, self.values, self.is_bos = list(tokens), list(values), list(is_bos)
        self.feature = feature
        self.header.setText(header)
        if feature is None:
            stops, fixed = SCALE_STOPS, None
            lo, hi = value_range(values, is_bos)
        else:
            stops = FEATURE_SCALE_STOPS
            doc_top = max(values_no_bos(values, is_bos))
            lo, hi = 0.0, float(top) if top and top > 0 else (doc_top if doc_top > 0 else 1.0)
            fixed = (lo, hi)
        self.browser.setHtml(render_html(tokens, values, is_bos, quantity, stops, fixed))
        self.gradient.set_stops(stops)
        above = sum(1 for v, b in zip(values, is_bos) if not b and v > hi + 1e-9)
        self.caption.setText(caption or quantity)
        self.caption.setStyleSheet("color: #606060;" if feature is None else "color: #8c2d04; font-weight: 600;")
        self.lo_label.setText(f"{lo:.1f}")
        self.hi_label.setText(f"{hi:.1f}" + ("+" if above else ""))
        off = [f"BOS {v:.1f}" for v, b in zip(values, is_bos) if b] if feature is None else []
        if above:
            top = max(values_no_bos(values, is_bos))
            off.append(f"{above} token{'s' if above != 1 else ''} up to {top:.1f} (darkest)")
        self.bos_label.setText(("off the scale: " + "; ".join(off)) if off else "")
        self.bos_label.setToolTip(self.bos_label.text())
        xs = np.array([i for i, b in enumerate(is_bos) if not b], dtype=float)
        ys = np.array([v for v, b in zip(values, is_bos) if not b], dtype=float)
        brushes = [scale_colour(normalize(v, lo, hi), stops) for v in ys]
        self.bars.setOpts(x=xs, height=ys, width=0.85, brushes=brushes)
        self.plot.setLabel("left", "norm" if feature is None else "activation")
        if len(xs):
            # The y range follows the colour scale so outliers do not flatten the other bars;
            # the mouse wheel zooms out to them.
            self.plot.setXRange(xs.min() - 0.5, xs.max() + 0.5, padding=0.01)
            self.plot.setYRange(0, (hi * 1.08) or 1.0, padding=0)
        self.stack.show_content()

    def html(self) -> str:
        return self.browser.toHtml()

    def plain_text(self) -> Optional[str]:
        return self.browser.toPlainText()
