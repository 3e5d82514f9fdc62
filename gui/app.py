"""Entry point of the desktop app: `distillscope` with no subcommand, or `python -m gui.app`."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

# Same as core.models.BUNDLED; importing that module here would load torch before the window shows.
BUNDLED = "bundled"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distillscope", description="Inspect a language model's "
                                     "residual stream on your documents.")
    parser.add_argument("--model", default=BUNDLED,
                        help="teacher: 'bundled' (Gemma 3 270M), a Hugging Face folder or a .gguf file")
    parser.add_argument("--corpus", default=None,
                        help="a file or folder of documents (default: the demo corpus)")
    parser.add_argument("--layer", type=int, default=6, help="layer to inspect (clamped to the model)")
    parser.add_argument("--no-model", action="store_true", help="do not load a teacher (for tests)")
    return parser.parse_args(argv)


def make_app(argv: Optional[list[str]] = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setOrganizationName("distillscope")
    app.setApplicationName("distillscope")
    if not hasattr(app, "gc_on_gui_thread"):
        # Python's cycle collector runs on whichever thread allocates; when it frees a Qt widget
        # on a worker thread, that thread and the GUI thread deadlock on Qt's object mutex and
        # the GIL (seen in CI). Collect on a GUI-thread timer instead (pyqtgraph's remedy).
        from pyqtgraph.util.garbage_collector import GarbageCollector

        app.gc_on_gui_thread = GarbageCollector(interval=1.0)
    return app


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    app = make_app([sys.argv[0]])
    from gui.main_window import MainWindow

    window = MainWindow(layer=args.layer)
    window.show()
    if not args.no_model:
        window.load_teacher(args.model)
    if args.corpus:
        window.open_paths([args.corpus])
    else:
        window.open_demo()
    code = app.exec()
    window.shutdown()  # quit() does not close windows: join the worker threads here
    return code


if __name__ == "__main__":
    sys.exit(main())
