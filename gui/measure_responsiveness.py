"""Measure GUI stalls with the real bundled teacher: `python -m gui.measure_responsiveness`.

Runs the main window offscreen, with a 5 ms StallProbe on the GUI thread, through
  1. loading the teacher (converting the bundled GGUF first if it was never converted),
  2. extracting the demo corpus' document vectors at a layer (cold: a fresh activation cache),
  3. showing a document's tokens while that extraction runs (latency of the quick task),
  4. cancelling an extraction at another layer once it has started (latency of Cancel),
and prints the longest event-loop gap and the 99th percentile for each phase.

The converted model is reused from the normal cache dir (DISTILLSCOPE_CACHE_DIR or the user cache);
activations go to a temporary cache dir so the extraction is measured cold and nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase")
    args = parser.parse_args(argv)

    from core import paths

    real_cache = paths.cache_dir()
    scratch = tempfile.mkdtemp(prefix="ds-measure-")
    (real_cache / "models").mkdir(exist_ok=True)
    os.symlink(real_cache / "models", os.path.join(scratch, "models"))
    os.environ["DISTILLSCOPE_CACHE_DIR"] = scratch
    os.environ["DISTILLSCOPE_DATA_DIR"] = os.path.join(scratch, "data")

    from gui.app import make_app
    from gui.main_window import MainWindow
    from gui.stall_probe import StallProbe, run_until

    app = make_app()
    window = MainWindow(layer=args.layer)
    window.show()
    results = []
    try:
        probe = StallProbe()
        t0 = time.monotonic()
        probe.start()
        window.load_teacher(args.model)
        ok = run_until(lambda: window.teacher is not None or not window.teacher_loading(), args.timeout)
        load = probe.stop()
        if not ok or window.teacher is None:
            print("teacher did not load:", window.status.label.text())
            return 1
        results.append(("teacher load", time.monotonic() - t0, load))

        probe = StallProbe()
        t0 = time.monotonic()
        probe.start()
        window.open_demo()
        # Once the extraction is under way, ask for a document's tokens and time the answer.
        run_until(lambda: window.runner.running() is not None and window.runner.running().key == "extract", 60)
        run_until(lambda: window.status.progress.value() > 0, 60)
        shown = []
        window.tokens_shown.connect(lambda: shown.append(time.monotonic()))
        t_select = time.monotonic()
        window.documents.select_row(100)
        run_until(lambda: bool(shown), 60)
        token_latency = (shown[0] - t_select) if shown else float("nan")
        ok = run_until(lambda: window.layer in window._vectors, args.timeout)
        extract = probe.stop()
        if not ok:
            print("extraction did not finish:", window.status.label.text())
            return 1
        results.append((f"demo extraction ({len(window.corpus):,} docs, layer {window.layer})",
                        time.monotonic() - t0, extract))

        window.set_layer(max(0, window.layer - 3))
        run_until(lambda: window.status.progress.value() > 0, 120)
        task = window._extract_task
        t_cancel = time.monotonic()
        window.status.cancel_button.click()
        run_until(lambda: task.outcome is not None and window.is_idle(), 30)
        cancel_latency = time.monotonic() - t_cancel
    finally:
        window.close()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nGUI responsiveness with {window.teacher.name if window.teacher else args.model} "
          f"({os.cpu_count()} CPU cores, torch threads in the worker: {window.runner.torch_threads})")
    for name, wall, stats in results:
        print(f"  {name:<40} {wall:6.1f} s   max stall {stats.max_ms:6.0f} ms   p99 {stats.p99_ms:5.0f} ms"
              f"   median tick {stats.median_ms:4.1f} ms   ({stats.ticks} ticks)")
    print(f"  token view during the extraction: shown {token_latency * 1000:.0f} ms after selecting")
    print(f"  Cancel during an extraction: {task.outcome} and idle {cancel_latency * 1000:.0f} ms after the click")
    return 0


if __name__ == "__main__":
    sys.exit(main())
