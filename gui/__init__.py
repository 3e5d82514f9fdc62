"""The desktop app (PySide6 + pyqtgraph). Imports nothing heavy; see gui/app.py."""
