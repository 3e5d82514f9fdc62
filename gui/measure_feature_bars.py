"""Measure "from Inspect to bars on screen": `python -m gui.measure_feature_bars [--dictionary DIR]`.

Runs the main window offscreen with the real bundled teacher, a dictionary (default: the starter)
and the demo corpus (its document vectors are the projection's reference; the feature index is
built first, so nothing else runs while measuring). Then, `--runs` times, it pastes a fresh
document of about `--tokens` tokens (demo fortunes joined, a run number in front so no cache
answers) and times, on the GUI thread, from the paste to
  tokens: the token view painted, and
  bars:   the feature bars painted,
with the share spent in the inspector task (teacher forward to the dictionary's layer + encoding
every token) and the longest event-loop gap meanwhile (5 ms StallProbe). The inspect path reads at
most 2,048 tokens of a document (as the token view does), so a 2,000-token paste is scored whole.

The converted model is reused from the normal cache dir (DISTILLSCOPE_CACHE_DIR or the user cache);
activations and indexes go to a temporary cache dir that is removed afterwards.

Measured on a 2-core VM with AMX, no GPU, load average 1.1; starter dictionary (TopK 3,072 on
resid_post.6); the pass in bfloat16 autocast (core.models.quick_precision) on both cores, as the
app does while no job runs:
  --tokens 2000: bars on screen 0.73 s median of 5 (0.69-0.83), tokens 0.72 s; the inspector task
                 (teacher to layer 6 on ~2,000 tokens + encoding them) 0.63 s, the GUI thread
                 after it 0.10 s; longest event-loop gap 172 ms.
  --inspector-threads 1 (as while a training job runs): bars 1.22 s.
  DISTILLSCOPE_EXACT_INSPECT=1 (float32, as on a CPU without AMX): bars 1.39 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def long_text(teacher, documents, n_tokens: int, run: int) -> str:
    parts, text = [f"Letter {run}."], ""
    for doc in documents:
        parts.append(doc.text)
        text = "\n\n".join(parts)
        if len(teacher.tokenize([text], 1_000_000)[0]) >= n_tokens:
            break
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--dictionary", default=None, help="dictionary folder (default: the starter)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens in each pasted document")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase")
    parser.add_argument("--inspector-threads", type=int, default=0,
                        help="torch threads of the document's pass (default: the app's choice)")
    args = parser.parse_args(argv)

    from core import paths

    real_cache = paths.cache_dir()
    scratch = tempfile.mkdtemp(prefix="ds-measure-bars-")
    (real_cache / "models").mkdir(parents=True, exist_ok=True)
    os.symlink(real_cache / "models", os.path.join(scratch, "models"))
    os.environ["DISTILLSCOPE_CACHE_DIR"] = scratch
    os.environ["DISTILLSCOPE_DATA_DIR"] = os.path.join(scratch, "data")

    from PySide6.QtWidgets import QApplication

    from gui import feature_session
    from gui.app import make_app
    from gui.main_window import MainWindow
    from gui.stall_probe import StallProbe, run_until

    make_app()
    window = MainWindow(layer=6, dictionary=args.dictionary or "starter")
    window.resize(1280, 800)
    window.show()
    session = window.features
    # The inspector task's own duration, measured on the worker thread.
    worker_s: list[float] = []
    inspect = feature_session.inspect_document

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inspect(*a, **kw)
        finally:
            worker_s.append(time.perf_counter() - t0)

    feature_session.inspect_document = timed
    try:
        t0 = time.monotonic()
        window.load_teacher(args.model)
        if not run_until(lambda: window.teacher is not None or not window.teacher_loading(), args.timeout):
            print("the teacher did not load:", window.status.label.text())
            return 1
        print(f"teacher loaded in {time.monotonic() - t0:.1f} s: {window.teacher.name}")
        if not run_until(lambda: session.ready() or (session.dictionary is not None and session.dictionary.fit_error)
                         or (session._loading is None and session.dictionary is None), 60) or not session.ready():
            print("no usable dictionary:", session.bars.stack.message or session.bars.dictionary_label.text())
            return 1
        print(session.dictionary.describe())
        layer = session.dictionary.hook.layer
        window.set_layer(layer)
        window.open_demo()
        t0 = time.monotonic()
        if not run_until(lambda: layer in window._vectors and session.index() is not None, args.timeout):
            print("the corpus vectors or the feature index did not finish:", window.status.label.text())
            return 1
        run_until(window.is_idle, 60)
        print(f"demo corpus vectors and feature index ready in {time.monotonic() - t0:.1f} s "
              f"({session.index().n_tokens:,} tokens)")

        if args.inspector_threads:
            window._inspect_threads = lambda: args.inspector_threads
        documents = window.corpus.documents
        rows = []
        for run in range(args.runs + 1):  # run 0 warms up (first-call kernels, imports)
            text = long_text(window.teacher, documents[run * 7:], args.tokens, run)
            n = len(window.teacher.tokenize([text], 1_000_000)[0])
            shown = {}
            marks = (lambda: shown.setdefault("bars", time.perf_counter()),
                     lambda: shown.setdefault("tokens", time.perf_counter()))
            session.scores_shown.connect(marks[0])
            window.tokens_shown.connect(marks[1])
            worker_s.clear()
            probe = StallProbe()
            probe.start()
            t0 = time.perf_counter()
            window.paste_text(text, "measure")
            doc_id = window.current_entry().doc.id
            ok = run_until(lambda: "bars" in shown and "tokens" in shown
                           and session.bars.header.text().startswith(f"Features of {doc_id}"), args.timeout)
            QApplication.processEvents()  # the paint of what was just set
            stalls = probe.stop()
            session.scores_shown.disconnect(marks[0])
            window.tokens_shown.disconnect(marks[1])
            if not ok:
                print("the bars did not appear:", session.bars.stack.message)
                return 1
            row = (n, shown["tokens"] - t0, shown["bars"] - t0, sum(worker_s), stalls.max_ms)
            print(("warm-up " if run == 0 else f"run {run}   ") +
                  f"{n:,} tokens (scored {min(n, feature_session.DOC_MAX_LENGTH):,}): tokens on screen "
                  f"{row[1]:.3f} s, bars on screen {row[2]:.3f} s, of which inspector task "
                  f"{row[3]:.3f} s; longest event-loop gap {row[4]:.0f} ms")
            if run:
                rows.append(row)
        med = [statistics.median(r[i] for r in rows) for i in range(1, 5)]
        print(f"\nmedian of {len(rows)}: tokens {med[0]:.3f} s, bars {med[1]:.3f} s, inspector task "
              f"{med[2]:.3f} s, GUI thread after it {med[1] - med[2]:.3f} s; max event-loop gap "
              f"{max(r[4] for r in rows):.0f} ms")
        print(f"CPU threads: inspector {window._inspect_threads()}, "
              f"os.cpu_count {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        feature_session.inspect_document = inspect
        window.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
