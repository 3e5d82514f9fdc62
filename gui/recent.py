"""The Open Recent list, kept in QSettings under a versioned key."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMenu

DEMO = "demo:"  # the entry that stands for the demo corpus
MAX_RECENT = 10


class RecentList:
    def __init__(self, settings: QSettings, key: str = "v1/recent"):
        self.settings, self.key = settings, key

    def items(self) -> list[str]:
        value = self.settings.value(self.key, [])
        return [value] if isinstance(value, str) else list(value or [])  # QSettings unwraps 1-lists

    def add(self, source: str) -> None:
        self.settings.setValue(self.key, ([source] + [r for r in self.items() if r != source])[:MAX_RECENT])

    def remove(self, source: str) -> None:
        self.settings.setValue(self.key, [r for r in self.items() if r != source])

    def clear(self) -> None:
        self.settings.remove(self.key)

    def last_folder(self) -> str:
        """Where file dialogs start: beside the most recent path that still exists."""
        for source in self.items():
            if source != DEMO and Path(source).exists():
                return str(Path(source).parent)
        return str(Path.home())

    def fill_menu(self, menu: QMenu, open_path: Callable[[str], None], open_demo: Callable[[], None]) -> None:
        menu.clear()
        items = self.items()
        for source in items:
            if source == DEMO:
                menu.addAction("Demo corpus (fortunes)", lambda: open_demo())
            else:
                menu.addAction(source, lambda s=source: open_path(s))
        if not items:
            menu.addAction("No recent files").setEnabled(False)
        menu.addSeparator()
        menu.addAction("Clear Recent", self.clear)
