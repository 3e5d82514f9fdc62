"""A form built from a documented config (core's `describe()`): one widget per field, the field's
help as its tooltip, and validation messages that name the field."""

from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QSpinBox,
                               QWidget)

INT_LIMIT = 2**31 - 1
AUTO = "auto"


def _pretty(name: str) -> str:
    return name  # as written in the TOML spec and `distillscope train --describe`


class ConfigForm(QWidget):
    """Fields from `entries` (describe() dicts). `values()` gives a dict ready for the config
    class; Optional fields left empty mean None ('automatic')."""

    changed = Signal()

    def __init__(self, entries: list[dict], values: Optional[dict] = None, parent=None):
        super().__init__(parent)
        self.entries = {e["name"]: e for e in entries}
        self.widgets: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        for e in entries:
            widget = self._make(e)
            tip = e["help"] + (f" ({e['unit']})" if e.get("unit") else "")
            bounds = [f"min {e['min']:,}" if e["min"] is not None else "",
                      f"max {e['max']:,}" if e["max"] is not None else ""]
            if any(bounds):
                tip += "  [" + ", ".join(b for b in bounds if b) + "]"
            widget.setToolTip(tip)
            label = QLabel(_pretty(e["name"]) + (f" ({e['unit']})" if e.get("unit") else ""))
            label.setToolTip(tip)
            layout.addRow(label, widget)
            self.widgets[e["name"]] = widget
            self.labels[e["name"]] = label
        if values:
            self.set_values(values)

    def _make(self, e: dict) -> QWidget:
        if e["choices"]:
            w = QComboBox()
            if e["optional"]:
                w.addItem(AUTO)
            w.addItems([str(c) for c in e["choices"]])
            w.currentIndexChanged.connect(lambda _i: self.changed.emit())
        elif e["type"] == "bool" and not e["optional"]:
            w = QCheckBox()
            w.toggled.connect(lambda _b: self.changed.emit())
        elif e["type"] == "bool":
            w = QComboBox()
            w.addItems([AUTO, "yes", "no"])
            w.currentIndexChanged.connect(lambda _i: self.changed.emit())
        elif e["type"] == "int" and not e["optional"]:
            w = QSpinBox()
            w.setRange(int(e["min"]) if e["min"] is not None else -INT_LIMIT,
                       min(int(e["max"]), INT_LIMIT) if e["max"] is not None else INT_LIMIT)
            w.setGroupSeparatorShown(True)
            w.setMinimumWidth(140)
            w.valueChanged.connect(lambda _v: self.changed.emit())
        else:  # floats (any magnitude, e.g. 2e-4), optional numbers, text
            w = QLineEdit()
            w.setMinimumWidth(140)
            if e["type"] == "float":
                w.setValidator(QDoubleValidator())
            if e["optional"]:
                w.setPlaceholderText(AUTO)
            w.textChanged.connect(lambda _t: self.changed.emit())
        return w

    def set_values(self, values: dict) -> None:
        for name, value in values.items():
            w = self.widgets.get(name)
            if w is None:
                continue
            if isinstance(w, QComboBox):
                text = AUTO if value is None else ("yes" if value is True else "no" if value is False
                                                   else str(value))
                index = w.findText(text)
                if index >= 0:
                    w.setCurrentIndex(index)
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QSpinBox):
                w.setValue(int(value))
            else:
                w.setText("" if value is None else (f"{value:g}" if isinstance(value, float) else str(value)))

    def values(self) -> dict[str, Any]:
        """Raw values by field; a number that does not parse raises ValueError naming the field."""
        out = {}
        for name, w in self.widgets.items():
            e = self.entries[name]
            if isinstance(w, QComboBox):
                text = w.currentText()
                if text == AUTO and e["optional"]:
                    out[name] = None
                elif e["type"] == "bool":
                    out[name] = text == "yes"
                elif e["type"] == "int":
                    out[name] = int(text)
                elif e["type"] == "float":
                    out[name] = float(text)
                else:
                    out[name] = text
            elif isinstance(w, QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, QSpinBox):
                out[name] = w.value()
            else:
                text = w.text().strip().replace(",", "")
                if text == "" and e["optional"]:
                    out[name] = None
                elif e["type"] in ("int", "float"):
                    try:
                        out[name] = int(text) if e["type"] == "int" else float(text)
                    except ValueError:
                        raise ValueError(f"'{name}' must be {'a whole number' if e['type'] == 'int' else 'a number'}"
                                         f", got '{text}'.")
                else:
                    out[name] = w.text()
        return out

    def mark_error(self, name: Optional[str]) -> None:
        """Highlight the field a message names (or clear every highlight)."""
        for field_name, w in self.widgets.items():
            w.setStyleSheet("border: 1px solid #d62728;" if field_name == name else "")
        if name in self.widgets:
            self.widgets[name].setFocus()
