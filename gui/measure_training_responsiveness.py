"""Measure the training view's responsiveness: `python -m gui.measure_training_responsiveness`.

Launches a real CPU SAE job (TopK on the bundled teacher's residual after block 6, over the
demo corpus, a few hundred steps) through the app's RunBridge with the training view on screen
(offscreen works), and records with a 5 ms StallProbe on the GUI thread the longest event-loop
stall and the 99th-percentile timer gap in each phase of the job:
  1. start: extracting the corpus' activations (cold cache) on the teacher the app has loaded
     (as in the app, which loads it at start-up and lends a twin of it to jobs); with
     --cold-teacher the job loads its own teacher too, as it must when it asks for another model,
  2. training, with the curves updating live,
  3. the final evaluation (explained variance, L0, loss recovered).
Then it times the view on a run with 100,000 logged steps: reading it (in slices), and the
redraw of a 100,000-point curve (setData + render of its plot).

The converted bundled model comes from DISTILLSCOPE_MODEL_CACHE or the user cache; runs and
activations go to a temporary folder, so the extraction is cold and nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

AIM_P99_MS = 50.0
AIM_MAX_MS = 200.0


class Phases:
    """One StallProbe per phase; `enter(name)` closes the current phase and opens the next."""

    def __init__(self):
        self.results: list[tuple[str, float, object]] = []
        self.name = None
        self.probe = None
        self.t0 = 0.0

    def enter(self, name: str) -> None:
        from gui.stall_probe import StallProbe

        if self.name == name:
            return
        self.close()
        self.name, self.probe, self.t0 = name, StallProbe(), time.monotonic()
        self.probe.start()

    def close(self) -> None:
        if self.probe is not None:
            self.results.append((self.name, time.monotonic() - self.t0, self.probe.stop()))
            self.probe = self.name = None


def _spec(args):
    from core.jobs import JobSpec

    spec = JobSpec()
    spec.run.name = f"measure-{args.arch}-{args.steps}"
    spec.data.teacher = args.model
    spec.data.corpus = "demo"
    spec.data.hook = f"resid_post.{args.layer}"
    spec.data.device = "cpu"
    spec.sae = {"architecture": args.arch, "d_sae": args.d_sae, "k": args.k}
    spec.train.batch_size = args.batch
    spec.train.total_tokens = args.batch * args.steps
    spec.train.log_every = args.log_every
    spec.run.checkpoint_every = 100
    return spec.validate()


def _long_run(n: int):
    """A finished run with n logged steps (synthetic values), as a CLI run would leave it."""
    import math
    import random

    from core.jobs import JobSpec, Run

    spec = JobSpec()
    spec.run.name = f"synthetic-{n:,}-steps"
    run = Run.create(spec)
    rng = random.Random(0)
    t0 = time.time()
    with open(run.folder / "metrics.jsonl", "w", encoding="utf-8") as f:
        for s in range(1, n + 1):
            loss = 1 / math.sqrt(s) + 0.03 * rng.random()
            f.write(json.dumps({"step": s, "tokens": s * 1024, "lr": 4e-4, "loss": loss, "mse": loss,
                                "explained_variance": 1 - loss, "l0": 32.0, "l1": 10 + rng.random(),
                                "dead_fraction": 0.01 * rng.random(), "time": s * 0.05,
                                "wall": t0 + s * 0.05}) + "\n")
    run.write_status(state="done", step=n, total_steps=n, message="Finished")
    return run


def _median_ms(fn, repeat: int = 7) -> float:
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return sorted(times)[repeat // 2] * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--arch", default="topk", choices=("topk", "batchtopk", "relu"))
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024, help="tokens per training step")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--points", type=int, default=100_000, help="steps of the long synthetic run")
    parser.add_argument("--cold-teacher", action="store_true",
                        help="do not lend the job the app's teacher: it loads its own (the stall that costs)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole job")
    args = parser.parse_args(argv)

    from core import paths

    scratch = tempfile.mkdtemp(prefix="ds-measure-training-")
    if not os.environ.get("DISTILLSCOPE_MODEL_CACHE"):
        real_models = paths.cache_dir() / "models"
        real_models.mkdir(parents=True, exist_ok=True)
        os.environ["DISTILLSCOPE_MODEL_CACHE"] = str(real_models)
    os.environ["DISTILLSCOPE_CACHE_DIR"] = os.path.join(scratch, "cache")
    os.environ["DISTILLSCOPE_DATA_DIR"] = os.path.join(scratch, "data")

    from gui.app import make_app
    from gui.run_bridge import RunBridge
    from gui.stall_probe import run_until
    from gui.training_view import TrainingView

    app = make_app()
    bridge = RunBridge()
    view = TrainingView(bridge)
    view.resize(1280, 800)
    view.show()
    if not args.cold_teacher:
        from core.models import load_teacher
        from gui.shadow import twins

        bridge.share_teacher(twins(load_teacher(args.model, device="cpu"))[1])
    load_before = os.getloadavg()
    phases = Phases()
    redraws = []
    view.curves.redrawn.connect(lambda: redraws.append(time.monotonic()))

    def on_event(kind: str, run_id: str, payload: dict) -> None:
        if kind == "metrics":
            phases.enter("training, live curves")
        elif kind == "progress" and payload.get("message") in ("Evaluating", "Loss recovered"):
            phases.enter("final evaluation")

    bridge.event.connect(on_event)
    long_numbers = {}
    try:
        phases.enter("teacher load + extraction" if args.cold_teacher else "extraction (app's teacher)")
        t_job = time.monotonic()
        run = bridge.launch(_spec(args))
        finished = run_until(lambda: view.row(run.id) is not None and view.row(run.id).state in
                         ("done", "failed", "cancelled", "interrupted"), args.timeout)
        phases.close()
        job_wall = time.monotonic() - t_job
        row = view.row(run.id)
        if not finished or row.state != "done":
            print(f"the job did not finish: {row.state if row else '?'} {row.error or row.message if row else ''}")
            return 1
        view.curves.flush()
        points = view.curves.point_count(run.id, "loss")
        steps = row.step
        view.grab().save(os.path.join(scratch, "view.png"))

        # A run with a long history: read it, then redraw one of its curves.
        from gui.stall_probe import StallProbe

        long_run = _long_run(args.points)
        view.refresh_runs()
        probe = StallProbe()
        t0 = time.monotonic()
        probe.start()
        view.select_runs([long_run.id])
        run_until(lambda: view.curves.point_count(long_run.id, "loss") == args.points and not view.curves.loading, 120)
        run_until(lambda: False, 0.3)  # the last paint
        long_numbers["read"] = (time.monotonic() - t0, probe.stop())
        plot = view.curves.plots["loss"]
        curve = plot.curves[long_run.id].smooth
        x, y = view.curves.curve_data(long_run.id, "loss")
        long_numbers["redraw"] = _median_ms(lambda i: (curve.setData(x, y + i * 1e-4), plot.tune_downsampling(),
                                                       plot.grab()))
        long_numbers["render"] = _median_ms(lambda i: plot.grab())
        plot.getPlotItem().setXRange(args.points * 0.3, args.points * 0.35)
        run_until(lambda: False, 0.1)
        long_numbers["zoomed"] = _median_ms(lambda i: (curve.setData(x, y + i * 1e-4), plot.tune_downsampling(),
                                                       plot.grab()))
        plot.getPlotItem().enableAutoRange()
        long_numbers["all"] = _median_ms(lambda i: (view.curves.set_smoothing(0.5 + i * 0.05),
                                                    view.curves.flush(), view.curves.grab()), repeat=5)
    finally:
        phases.close()
        view.close()
        bridge.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    cores = os.cpu_count()
    print(f"\nTraining view responsiveness: {args.arch} SAE (d_sae {args.d_sae:,}, k {args.k}) on "
          f"{args.model} resid_post.{args.layer}, demo corpus, {steps:,} steps of {args.batch:,} tokens, "
          f"logged every {args.log_every}; {cores} CPU cores, the job's torch threads: {max(1, cores - 1)}; "
          f"load average before: {load_before[0]:.1f}")
    print(f"  {'phase':<28} {'wall':>7}  {'max stall':>9}  {'p99 gap':>7}  {'median':>6}  ticks")
    for name, wall, stats in phases.results:
        print(f"  {name:<28} {wall:6.1f}s  {stats.max_ms:7.0f}ms  {stats.p99_ms:5.0f}ms  "
              f"{stats.median_ms:4.1f}ms  {stats.ticks}")
    print(f"  whole job: {job_wall:.1f} s; the loss curve got {points} points in {len(redraws)} redraws")
    training = [s for n, _, s in phases.results if n.startswith("training")]
    if training:
        s = training[0]
        met = s.p99_ms < AIM_P99_MS and s.max_ms < AIM_MAX_MS
        print(f"  aim while training (p99 < {AIM_P99_MS:.0f} ms, no stall over {AIM_MAX_MS:.0f} ms): "
              f"{'met' if met else 'MISSED'}")
    wall, stats = long_numbers["read"]
    n = f"{args.points:,}"
    print(f"\n  {n}-step run: read and drawn in {wall * 1000:.0f} ms (in slices; longest stall meanwhile "
          f"{stats.max_ms:.0f} ms, p99 {stats.p99_ms:.0f} ms)")
    print(f"  redraw of a {n}-point curve (setData + render of its plot): {long_numbers['redraw']:.1f} ms "
          f"(the plot's render alone: {long_numbers['render']:.1f} ms; zoomed to 5%: {long_numbers['zoomed']:.1f} ms)")
    print(f"  all 8 curves of the 4 plots re-smoothed, set and rendered: {long_numbers['all']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
