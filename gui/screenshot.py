"""Take the screenshots a person looks at: `python -m gui.screenshot OUTDIR [--model bundled]`.

Runs the real app (under Xvfb: DISPLAY=:99 QT_QPA_PLATFORM=xcb; offscreen works too) with the
demo corpus and saves:
  loading.png   the window while the teacher loads,
  inspect.png   a document's tokens coloured by residual norm, with its nearest neighbours,
  long.png      a longer pasted letter (wrapping, newlines, scrolling),
  problems.png  after dropping a folder with broken files onto the window: the Problems dock,
                while the grown corpus is extracted (progress bar and Cancel in the status bar),
  paste.png     the Paste Text dialog,
  wizard-*.png  the training wizard's four pages (data, method, settings, measured cost),
  training.png  the Training tab with live curves of a real TopK run on layer 6 (then cancelled).
`--only-training` skips the inspect shots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _wait(app, condition, timeout_s: float) -> bool:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    return bool(condition())


def _settle(app, seconds: float = 0.4) -> None:
    _wait(app, lambda: False, seconds)


def _bad_folder(root: Path) -> Path:
    """A folder of mixed input: two good documents and several broken files."""
    folder = root / "my-notes"
    (folder / "drafts").mkdir(parents=True)
    (folder / "intro.txt").write_text("Interpretability starts with looking at the data.\n", "utf-8")
    (folder / "drafts" / "idea.md").write_text("# Idea\n\nDistil the teacher, then read the student.", "utf-8")
    (folder / "photo.txt").write_bytes(bytes(range(256)) * 16)
    (folder / "empty.md").write_text("", "utf-8")
    (folder / "rows.jsonl").write_text('{"text": "fine row"}\n{"text": 3}\nnot json\n{"body": "x"}\n', "utf-8")
    (folder / "table.csv").write_text('id,text\n1,"ok, quoted"\n2,too,many,cells\n', "utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me, na\xefve\n".encode("latin-1"))
    (folder / "slides.pdf").write_bytes(b"%PDF-1.4\n")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--document", default="science-0017", help="id of the document to inspect")
    parser.add_argument("--only-training", action="store_true", help="only the wizard and training shots")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    from gui.app import make_app
    from gui.main_window import MainWindow

    app = make_app()
    window = MainWindow(layer=args.layer)
    window.resize(1280, 800)
    window.show()
    window.load_teacher(args.model)
    window.open_demo()
    _wait(app, lambda: len(window.entries) > 0, 30)
    _settle(app, 1.0)
    window.grab().save(str(out / "loading.png"))
    print("loading.png:", window.status.label.text())

    if not _wait(app, lambda: window.teacher is not None, 900):
        print("the teacher did not load:", window.status.label.text())
        window.close()
        return 1
    if args.only_training:
        code = training_shots(app, window, out, args.layer)
        window.close()
        return code
    ids = [e.doc.id for e in window.entries]
    row = ids.index(args.document) if args.document in ids else 0
    window.documents.select_row(row)
    _wait(app, lambda: window.layer in window._vectors and window.neighbours.model.rowCount() > 0
          and bool(window.token_panel.tokens), 900)
    _settle(app)
    window.grab().save(str(out / "inspect.png"))
    print("inspect.png:", window.status.label.text())

    dialog = window.paste_dialog_open()
    letter = (Path(__file__).resolve().parent.parent / "resources" / "demo" / "sample.txt")
    dialog.text.setPlainText(letter.read_text("utf-8") if letter.exists() else "Dear reader,\n\nHello.")
    dialog.label.setText("letter")
    _settle(app)
    dialog.grab().save(str(out / "paste.png"))
    dialog.accept()
    _wait(app, lambda: bool(window.token_panel.tokens) and window.current_entry().corpus_index is None
          and window.neighbours.model.rowCount() > 0, 120)
    _settle(app)
    window.grab().save(str(out / "long.png"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = _bad_folder(Path(tmp))
        n = len(window.corpus)
        window.open_paths([folder], add=True)  # what dropping the folder on the window does
        _wait(app, lambda: len(window.corpus) > n, 60)
        _settle(app, 3.0)  # the extraction of the grown corpus is running: progress bar visible
        window.grab().save(str(out / "problems.png"))
        print("problems.png:", window.status.problems_button.text())
    code = training_shots(app, window, out, args.layer)
    window.close()
    return code


def training_shots(app, window, out: Path, layer: int) -> int:
    from core.jobs import JobSpec

    spec = JobSpec()
    spec.data.hook = f"resid_post.{layer}"
    spec.run.name = "topk-demo-l6"
    spec.train.total_tokens = 150_000
    wizard = window.new_training_run(spec)
    for name in ("data", "method", "settings"):
        _settle(app)
        wizard.grab().save(str(out / f"wizard-{name}.png"))
        wizard.next()
    _wait(app, lambda: wizard.cost_page.estimate is not None or "error" in wizard.cost_page.status.text(), 300)
    _settle(app)
    wizard.grab().save(str(out / "wizard-cost.png"))
    wizard.accept()
    view = window.training_view
    _wait(app, lambda: window.run_bridge.active_run_id() is not None, 30)
    run_id = window.run_bridge.active_run_id()
    if not _wait(app, lambda: view.curves.point_count(run_id, "loss") >= 15, 900):
        print("no curve points appeared")
        return 1
    _settle(app, 1.0)
    window.grab().save(str(out / "training.png"))
    print("training.png:", view.row(run_id).state, view.curves.point_count(run_id, "loss"), "points")
    view.pause()
    _wait(app, lambda: view.row(run_id).state == "paused", 10)
    _settle(app, 1.5)
    window.grab().save(str(out / "training-paused.png"))
    view.cancel()
    _wait(app, lambda: window.run_bridge.active_run_id() is None, 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
