"""The desktop app (PySide6 + pyqtgraph). Imports nothing heavy; see gui/app.py."""

from gui import qtfix  # noqa: F401  (must run before any Qt signal is emitted)
