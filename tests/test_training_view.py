"""The training view: live curves of real tiny jobs run through the app's RunBridge, the runs list
and its buttons (pause, resume, cancel, resume from checkpoint, clone, delete), overlays,
exports, and the cost of drawing a 100,000-point curve."""

import csv
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QEvent, QObject, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from core.jobs import JobSpec, Run  # noqa: E402
from gui.curves import DEFAULT_METRICS, RunSeries, ema  # noqa: E402
from gui.run_bridge import RunBridge  # noqa: E402
from gui.stall_probe import StallProbe  # noqa: E402
from gui.training_view import TrainingView  # noqa: E402
from tests.test_jobs import tiny_spec, write_corpus  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl")


@pytest.fixture
def bridge():
    b = RunBridge()
    yield b
    b.shutdown()
    assert not b.runner._thread.is_alive(), "runner thread still running after shutdown"


@pytest.fixture
def view(qtbot, bridge):
    v = TrainingView(bridge)
    qtbot.addWidget(v)
    v.resize(1200, 760)
    v.show()
    yield v
    v.close()
    timers = (v._list_timer, v._curves_timer, v._soon, v.curves._catch_up, v.curves._draw_timer)
    assert not any(t.isActive() for t in timers), "timer left running"


def state(view, run_id):
    row = view.row(run_id)
    return row.state if row else None


def click(qtbot, view, name):
    button = view.buttons[name]
    assert button.isEnabled(), f"{name} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def enabled(view):
    return {name: b.isEnabled() for name, b in view.buttons.items()}


def fake_run(rows=(), name="fake", kind="sae", **status) -> Run:
    spec = JobSpec.for_kind(kind)
    spec.run.name = name
    run = Run.create(spec)
    with open(run.folder / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    run.write_status(**status)
    return run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- smoothing and tailing -----------------------------------------------------------------------


def tensorboard_smoothing(values, weight):
    out, last, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight ** count))
    return np.array(out)


@pytest.mark.parametrize("n", [1, 7, 128, 129, 1000])
@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9, 0.99])
def test_smoothing_is_tensorboards_debiased_ema(n, weight):
    y = np.random.default_rng(n).normal(size=n).cumsum() + 3
    if n > 10:
        y[4], y[9] = np.nan, np.inf
    expected = tensorboard_smoothing(y, weight) if weight else y
    np.testing.assert_allclose(ema(y, weight), expected, rtol=1e-9, equal_nan=True)
    assert (ema(np.full(n, 0.1), weight) == 0.1).all(), "a flat curve must stay exactly flat"


def test_tailing_keeps_the_last_value_per_step_across_a_resume(tmp_path):
    run = fake_run([{"step": s, "loss": 1.0, "time": s / 10} for s in range(5, 55, 5)], state="cancelled")
    series = RunSeries(run)
    assert series.poll() and list(series.column("step")) == list(range(5, 55, 5))
    assert not series.poll()  # nothing new: nothing read again
    offset = series.offset
    # The resume re-logs from its checkpoint at step 30 with new values, and logs a new metric.
    for s in range(35, 70, 5):
        run.append_metrics({"step": s, "loss": 2.0, "aux": 0.5, "time": s / 10})
    assert series.poll() and series.offset > offset
    assert list(series.column("step")) == list(range(5, 70, 5))
    loss = dict(zip(series.column("step"), series.column("loss")))
    assert loss[30] == 1.0 and loss[35] == 2.0 and loss[50] == 2.0
    assert np.isnan(series.column("aux")[0]) and series.column("aux")[-1] == 0.5
    # The same file read in one go gives the same series, as Run.metrics() does.
    again = RunSeries(run)
    again.poll()
    assert list(again.column("step")) == [r["step"] for r in run.metrics()]
    np.testing.assert_array_equal(again.column("loss"), [r["loss"] for r in run.metrics()])


# -- the view with no runs, and runs that appear ------------------------------------------------


def test_empty_state_then_a_run_from_elsewhere_appears(qtbot, view):
    assert view.stack.currentIndex() == 0
    assert "No runs yet" in view.empty_label.text() and "Ctrl+T" in view.empty_label.text()
    # A run written by another process (the CLI) shows up on the next refresh, selected.
    run = fake_run([{"step": 5, "loss": 1.0}], state="done", step=5, total_steps=5)
    qtbot.waitUntil(lambda: view.stack.currentIndex() == 1 and state(view, run.id) == "done", timeout=3_000)
    qtbot.waitUntil(lambda: view.curves.point_count(run.id, "loss") == 1, timeout=3_000)
    assert view.selected_ids() == [run.id]


def test_a_student_run_shows_its_validation_curves(qtbot, view):
    rows = [{"step": s, "loss": 1.0 / s, **({"val_mse": 0.9 / s, "val_cosine": 0.1 * s} if s % 2 == 0 else {})}
            for s in range(1, 7)]
    run = fake_run(rows, name="student", kind="student", state="done", step=6, total_steps=6)
    qtbot.waitUntil(lambda: view.curves.point_count(run.id, "val_cosine") == 3, timeout=3_000)
    assert view.curves.point_count(run.id, "loss") == 6
    assert [m for m, a in view.metric_actions.items() if a.isChecked()] == ["loss", "val_mse", "val_cosine"]
    # Its student opens from here once the run has written one.
    assert not view.buttons["student"].isEnabled()
    folder = run.folder / "artifacts" / "student"
    folder.mkdir(parents=True)
    (folder / "student.json").write_text("{}")
    view._update_actions()
    assert view.buttons["student"].isEnabled()
    with qtbot.waitSignal(view.student_requested, timeout=3_000) as signal:
        view.buttons["student"].click()
    assert signal.args == [str(folder)]


# -- a live job through the bridge ---------------------------------------------------------------


def test_live_curves_pause_resume_cancel_and_resume_from_checkpoint(qtbot, view, bridge, tiny_model_dir, corpus):
    run = bridge.launch(tiny_spec(tiny_model_dir, corpus, steps=100_000))
    qtbot.waitUntil(lambda: view.selected_ids() == [run.id], timeout=5_000)  # the view follows it

    def points():
        return view.curves.point_count(run.id, "loss")

    qtbot.waitUntil(lambda: points() >= 3, timeout=TIMEOUT_MS)
    n = points()
    qtbot.waitUntil(lambda: points() > n, timeout=10_000)  # the curve grows while it runs
    for metric in DEFAULT_METRICS:
        assert view.curves.point_count(run.id, metric) > 0
    qtbot.waitUntil(lambda: state(view, run.id) == "running", timeout=5_000)
    assert enabled(view) == {"pause": True, "resume": False, "cancel": True, "continue": False,
                             "student": False, "clone": True, "open": True, "delete": False}

    click(qtbot, view, "pause")
    qtbot.waitUntil(lambda: state(view, run.id) == "paused", timeout=3_000)
    assert enabled(view)["resume"] and not enabled(view)["pause"] and enabled(view)["cancel"]
    view.curves.poll()
    view.curves.flush()
    n = points()
    qtbot.wait(800)
    view.curves.poll()
    view.curves.flush()
    assert points() == n, "the curve grew while paused"

    click(qtbot, view, "resume")
    qtbot.waitUntil(lambda: state(view, run.id) == "running", timeout=3_000)
    qtbot.waitUntil(lambda: points() > n, timeout=10_000)
    assert enabled(view)["pause"] and not enabled(view)["resume"]

    click(qtbot, view, "cancel")
    qtbot.waitUntil(lambda: state(view, run.id) == "cancelled" and enabled(view)["continue"], timeout=5_000)
    assert not enabled(view)["pause"] and not enabled(view)["cancel"] and enabled(view)["delete"]
    step = int(run.latest_checkpoint().name[5:])
    view.curves.poll()
    view.curves.flush()
    n = points()

    click(qtbot, view, "continue")
    qtbot.waitUntil(lambda: state(view, run.id) == "running", timeout=TIMEOUT_MS)
    assert not enabled(view)["continue"] and not enabled(view)["delete"]
    qtbot.waitUntil(lambda: view.row(run.id).step > step + 20 and points() > n + 2, timeout=TIMEOUT_MS)
    assert f"resuming at step {step:,}" in run.read_log()
    steps = view.curves.series[run.id].column("step")
    assert (np.diff(steps) > 0).all(), "a re-logged step shows twice"

    click(qtbot, view, "cancel")
    qtbot.waitUntil(lambda: state(view, run.id) == "cancelled" and bridge.active_run_id() is None, timeout=5_000)


# -- overlay and export --------------------------------------------------------------------------


def test_overlay_of_two_runs_and_export_png_svg_csv(qtbot, view, bridge, tiny_model_dir, corpus, tmp_path):
    first = tiny_spec(tiny_model_dir, corpus, steps=30)
    first.run.name = "first"
    second = tiny_spec(tiny_model_dir, corpus, steps=40, lr=1e-3)
    second.run.name = "second"
    a, b = bridge.launch(first), bridge.launch(second)
    qtbot.waitUntil(lambda: state(view, a.id) == "done" and state(view, b.id) == "done", timeout=TIMEOUT_MS)
    for run in (a, b):
        row = view.model.row_of(run.id)
        ev, l0 = (view.model.index(row, c).data() for c in (3, 4))
        assert ev and l0, "the evaluation summary is missing from the list"

    view.select_runs([a.id, b.id])
    curves = view.curves
    curves.flush()
    for metric in DEFAULT_METRICS:
        assert curves.point_count(a.id, metric) == len(a.metrics())
        assert curves.point_count(b.id, metric) == len(b.metrics())
    assert curves.colour(a.id) != curves.colour(b.id)
    assert view.curves_title.text() == "Comparing 2 runs"
    first_plot = next(iter(curves.plots.values()))
    assert first_plot.legend.isVisible() and len(first_plot.legend.items) == 2
    # The list shows each shown run's colour.
    assert view.model.index(view.model.row_of(a.id), 0).data(Qt.ItemDataRole.DecorationRole) is not None

    # Smoothing changes the smoothed curve only; 0 shows the raw values alone.
    loss_a = curves.plots["loss"].curves[a.id]
    raw = np.array(loss_a.raw.yData)
    view.smoothing.setValue(0)
    curves.flush()
    np.testing.assert_array_equal(loss_a.smooth.yData, raw)
    assert not loss_a.raw.isVisible()
    view.smoothing.setValue(90)
    curves.flush()
    assert loss_a.raw.isVisible() and not np.allclose(loss_a.smooth.yData, raw)
    np.testing.assert_allclose(loss_a.smooth.yData, tensorboard_smoothing(raw, 0.9))
    # x as training time, log y.
    view.x_axis.setCurrentIndex(view.x_axis.findData("time"))
    curves.flush()
    np.testing.assert_allclose(loss_a.smooth.xData, [r["time"] for r in a.metrics()])
    view.log_y.setChecked(True)
    curves.flush()
    assert loss_a.smooth.opts["logMode"][1]
    view.x_axis.setCurrentIndex(view.x_axis.findData("step"))

    png, svg, csv_path, all_png = (tmp_path / n for n in ("loss.png", "loss.svg", "data.csv", "all.png"))
    view.export_plot("loss", png)
    view.export_plot("explained_variance", svg)
    view.export_csv(csv_path)
    view.export_all_png(all_png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert all_png.read_bytes()[:4] == b"\x89PNG"
    text = svg.read_text()
    assert "<svg" in text and ("<path" in text or "<polyline" in text)
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    header = ["run", "step", "time", "wall"]
    for metric in DEFAULT_METRICS:
        header += [metric, f"{metric}_smoothed"]
    assert rows[0] == header
    assert len(rows) - 1 == len(a.metrics()) + len(b.metrics())
    assert {r[0] for r in rows[1:]} == {a.id, b.id}
    assert float(rows[1][4]) == a.metrics()[0]["loss"] or float(rows[1][4]) == b.metrics()[0]["loss"]
    one = tmp_path / "loss.csv"
    view.export_csv(one, ["loss"])
    assert one.read_text().splitlines()[0] == "run,step,time,wall,loss,loss_smoothed"

    # Deselecting a run removes its curves, and the other keeps its colour.
    colour_b = curves.colour(b.id)
    view.select_runs([b.id])
    curves.flush()
    assert a.id not in curves.plots["loss"].curves and curves.colour(b.id) == colour_b
    assert not first_plot.legend.isVisible()


# -- buttons on runs that are not the app's ------------------------------------------------------


def test_interrupted_run_clone_and_delete(qtbot, view, monkeypatch):
    rows = [{"step": s, "loss": 1 / s} for s in range(5, 50, 5)]
    interrupted = fake_run(rows, name="crashed", state="running", pid=dead_pid(), heartbeat=time.time(),
                           step=45, total_steps=100)
    (interrupted.checkpoints_dir / "step-00000040").mkdir(parents=True)
    interrupted.write_status(checkpoint_step=40)
    elsewhere = fake_run(rows, name="cli", state="running", pid=os.getpid(), heartbeat=time.time(),
                         step=45, total_steps=100)
    view.refresh_runs()
    assert state(view, interrupted.id) == "interrupted" and state(view, elsewhere.id) == "running"

    view.select_runs([interrupted.id])
    assert enabled(view) == {"pause": False, "resume": False, "cancel": False, "continue": True,
                             "student": False, "clone": True, "open": True, "delete": True}
    with qtbot.waitSignal(view.clone_requested, timeout=1_000) as blocker:
        click(qtbot, view, "clone")
    assert blocker.args[0].id == interrupted.id and blocker.args[0].spec.run.name == "crashed"

    # A run live in another process can be neither controlled nor deleted from here.
    view.select_runs([elsewhere.id])
    assert not any(enabled(view)[k] for k in ("pause", "resume", "cancel", "continue", "delete"))
    assert view.delete_run(elsewhere, confirm=False) is False
    assert view.error_box is not None and "cannot be deleted" in view.error_box.text()
    view.error_box.close()
    assert elsewhere.folder.is_dir()

    # Delete asks first; Cancel keeps the folder, Yes removes it.
    view.select_runs([interrupted.id])
    click(qtbot, view, "delete")
    box = view.confirm_box
    assert box is not None and box.isVisible() and "crashed" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert interrupted.folder.is_dir()
    click(qtbot, view, "delete")
    qtbot.mouseClick(view.confirm_box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not interrupted.folder.exists() and view.row(interrupted.id) is None, timeout=2_000)
    assert len(view.model.rows) == 1


# -- 100,000 points ------------------------------------------------------------------------------


def test_a_100k_point_curve_redraws_fast(qtbot, view):
    n = 100_000
    t = np.arange(1, n + 1)
    loss = 1 / np.sqrt(t) + 0.05 * np.random.default_rng(0).normal(size=n)
    run = fake_run([], name="long", state="done", step=n, total_steps=n)
    with open(run.folder / "metrics.jsonl", "w") as f:
        f.writelines(f'{{"step": {s}, "loss": {float(v)!r}, "l0": 32.0, "time": {s * 0.01}}}\n' for s, v in zip(t, loss))
    view.refresh_runs()
    t0 = time.perf_counter()
    with StallProbe() as probe:
        view.select_runs([run.id])  # reads the file in slices, the event loop running between them
        qtbot.waitUntil(lambda: view.curves.point_count(run.id, "loss") == n, timeout=30_000)
    load = time.perf_counter() - t0
    assert not view.curves.loading
    plot = view.curves.plots["loss"]
    curve = plot.curves[run.id]
    x, y = view.curves.curve_data(run.id, "loss")
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        curve.smooth.setData(x, y + i * 1e-3)
        plot.tune_downsampling()
        plot.grab()  # renders the plot's scene now, as a paint would
        times.append(time.perf_counter() - t0)
    redraw = sorted(times)[len(times) // 2]
    t0 = time.perf_counter()
    view.curves.set_smoothing(0.95)  # recompute the smoothing and set every curve's data
    view.curves.flush()
    view.curves.grab()
    everything = time.perf_counter() - t0
    print(f"\n100,000 points: first read + draw {load * 1000:.0f} ms (longest stall meanwhile "
          f"{probe.stats().max_ms:.0f} ms), setData + render of one curve's plot "
          f"{redraw * 1000:.1f} ms (median of 5), all curves re-smoothed + rendered {everything * 1000:.0f} ms")
    assert redraw < 0.5 and everything < 2.0
    assert probe.stats().max_ms < 500, "reading a long run froze the interface"

    # While x follows the data, the downsampling factor comes from the point count (pyqtgraph's
    # view-dependent factor can oscillate with auto range and repaint forever); zoomed by hand,
    # pyqtgraph's auto factor and clip-to-view show the detail.
    assert not curve.smooth.opts["autoDownsample"] and curve.smooth.opts["downsample"] > 10
    painted = []

    class PaintCounter(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                painted.append(time.monotonic())
            return False

    counter = PaintCounter()
    plot.viewport().installEventFilter(counter)
    qtbot.wait(300)
    painted.clear()
    qtbot.wait(500)
    assert len(painted) <= 2, f"the plot keeps repainting by itself ({len(painted)} paints in 0.5 s)"
    plot.getPlotItem().setXRange(n * 0.4, n * 0.41, padding=0)
    qtbot.waitUntil(lambda: curve.smooth.opts["autoDownsample"], timeout=2_000)
    plot.viewport().removeEventFilter(counter)
