"""Jobs and runs: spec round-trip, exact resume, pause/cancel through the runner, interrupted
runs, SIGKILL at random moments, the CLI, and data parallelism under torchrun."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.dictionaries.base import SAE
from core.jobs import JobSpec, Run, Runner, execute, list_runs
from core.jobs.runner import JobContext
from core.jobs.spec import SpecError, describe_spec
from tests.conftest import TINY_TEXT

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(path: Path, n: int = 80, seed: int = 0) -> Path:
    words = TINY_TEXT.split()
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(10, 40)))
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    return path


def tiny_spec(model_dir: Path, corpus: Path, steps: int = 40, **train) -> JobSpec:
    spec = JobSpec()
    spec.data.teacher = str(model_dir)
    spec.data.corpus = str(corpus)
    spec.data.hook = "resid_post.2"
    spec.sae = {"architecture": "topk", "d_sae": 64, "k": 4}
    spec.train.batch_size = 64
    spec.train.total_tokens = 64 * steps
    spec.train.log_every = 5
    spec.train.warmup_steps = 5
    for key, value in train.items():
        setattr(spec.train, key, value)
    spec.run.checkpoint_every = 10
    spec.run.loss_recovered_docs = 0
    return spec.validate()


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl")


def final_weights(run: Run) -> dict:
    sae = SAE.load(run.artifacts_dir / "sae")
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def assert_same_weights(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=tol, rtol=tol, msg=key)


# -- spec ---------------------------------------------------------------------------------------


def test_spec_round_trips_through_toml_and_every_field_is_documented():
    spec = JobSpec()
    spec.sae["architecture"] = "batchtopk"
    spec.train.lr = 3e-4
    spec.run.name = "my run"
    again = JobSpec.from_toml(spec.to_toml())
    assert again == spec
    for section, entries in describe_spec().items():
        for e in entries:
            assert e["help"], f"[{section}] {e['name']} has no description"
    assert "d_in" not in {e["name"] for e in describe_spec()["sae"]}  # comes from the teacher


@pytest.mark.parametrize("text, words", [
    ("[train]\nlrr = 1.0\n", ["lrr", "[train]"]),
    ("[train]\nbatch_size = 0\n", ["[train]", "batch_size", "at least 1"]),
    ("[sae]\narchitecture = 'wavelet'\n", ["wavelet"]),
    ("[sae]\nd_sae = 8\nk = 32\n", ["'k'"]),
    ("[data]\nhook = 'resid_post'\n", ["hook"]),
    ("[data]\nsource = 'tape'\n", ["source", "cache"]),
    ("[train\n", ["TOML"]),
    ("colour = 'red'\n", ["colour"]),
])
def test_bad_specs_say_what_is_wrong(text, words):
    with pytest.raises(SpecError) as info:
        JobSpec.from_toml(text)
    for word in words:
        assert word in str(info.value)


# -- running and resuming -------------------------------------------------------------------------


def cancel_at(step: int):
    """An event callback that cancels the run once its training reaches `step`."""
    box = {}

    def on_event(kind, run_id, payload):
        if kind == "progress" and box["ctx"].step >= step:
            box["ctx"].cancel()
    return box, on_event


def test_n_steps_then_resume_then_n_steps_equals_2n_straight(tiny_model_dir, corpus, tmp_path):
    spec = tiny_spec(tiny_model_dir, corpus, steps=40)
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done"

    split = Run.create(spec, tmp_path / "runs")
    box, on_event = cancel_at(17)  # between checkpoints: cancel must write its own
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert split.latest_checkpoint().name == "step-00000017"
    assert split.status()["state"] == "cancelled"
    assert not (split.artifacts_dir / "sae").exists()
    assert execute(split) == "done"
    assert "resuming at step 17" in split.read_log()
    assert_same_weights(final_weights(straight), final_weights(split))
    steps = [row["step"] for row in split.metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    evaluation = json.loads((split.artifacts_dir / "eval.json").read_text())
    assert 0 < evaluation["explained_variance"] <= 1 and evaluation["l0"] <= 4


def test_runner_pauses_resumes_and_cancels_within_a_second(tiny_model_dir, corpus, tmp_path):
    events = []
    runner = Runner(on_event=lambda kind, run_id, payload: events.append((kind, payload)))
    spec = tiny_spec(tiny_model_dir, corpus, steps=100_000)
    run = Run.create(spec, tmp_path / "runs")
    runner.submit(run)

    def wait_for(predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return False

    try:
        assert wait_for(lambda: len(run.metrics()) >= 2, 60)
        t0 = time.monotonic()
        runner.pause()
        assert wait_for(lambda: run.status()["state"] == "paused", 1.0)
        paused_at = runner.context.step
        time.sleep(0.5)
        assert runner.context.step == paused_at, "training went on while paused"
        assert time.monotonic() - t0 < 5
        runner.resume()
        assert wait_for(lambda: runner.context is not None and runner.context.step > paused_at + 2, 5)
        t0 = time.monotonic()
        runner.cancel()
        assert wait_for(lambda: run.status()["state"] == "cancelled", 1.0)
        assert time.monotonic() - t0 < 1.0
        assert run.latest_checkpoint() is not None
        assert wait_for(lambda: not runner.is_busy(), 5)
        # resume from the checkpoint, through the runner again
        step = int(run.latest_checkpoint().name[5:])
        runner.submit(run)
        assert wait_for(lambda: runner.context is not None and runner.context.step > step, 30)
        assert f"resuming at step {step:,}" in run.read_log()
    finally:
        runner.shutdown()
    assert run.status()["state"] == "cancelled"
    kinds = {kind for kind, _ in events}
    assert {"state", "progress", "metrics"} <= kinds


def test_a_job_runs_on_the_teacher_the_app_lends_when_it_is_the_same_model(tiny_model_dir, corpus, tmp_path):
    from core.models import load_teacher

    teacher = load_teacher(tiny_model_dir, device="cpu")
    assert teacher.loaded_as(tiny_model_dir, "cpu") and teacher.loaded_as(str(tiny_model_dir) + "/", None)
    assert not teacher.loaded_as(tmp_path, "cpu")
    assert not teacher.loaded_as(tiny_model_dir, "cpu", "bfloat16")
    asked = []

    def lend(source, device):
        asked.append((source, device))
        return teacher if teacher.loaded_as(source, device) else None

    spec = tiny_spec(tiny_model_dir, corpus, steps=10)
    run = Run.create(spec, tmp_path / "runs")
    assert execute(run, JobContext(run, teachers=lend)) == "done"
    assert asked == [(str(tiny_model_dir), None)]
    assert "using the teacher the app has loaded" in run.read_log()

    other = Run.create(spec, tmp_path / "runs")  # a provider with nothing to lend: the job loads its own
    assert execute(other, JobContext(other, teachers=lambda source, device: None)) == "done"
    assert "using the teacher" not in other.read_log()
    assert_same_weights(final_weights(run), final_weights(other))


def test_a_failing_job_says_why_and_runs_are_listed(tmp_path, corpus):
    spec = JobSpec()
    spec.data.teacher = str(tmp_path / "no-such-model")
    spec.data.corpus = str(corpus)
    run = Run.create(spec, tmp_path / "runs")
    assert execute(run) == "failed"
    status = run.status()
    assert "does not exist" in status["error"] and "Traceback" not in status["error"]
    assert [r.id for r in list_runs(tmp_path / "runs")] == [run.id]


def test_dead_process_or_stale_heartbeat_reads_as_interrupted(tmp_path):
    run = Run.create(JobSpec(), tmp_path / "runs")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_status(state="running", pid=dead.pid, heartbeat=time.time())
    assert run.effective_state() == "interrupted"
    run.write_status(state="paused", pid=os.getpid(), heartbeat=time.time())
    assert run.effective_state() == "paused"
    run.write_status(state="running", pid=os.getpid(), heartbeat=time.time() - 3600)
    assert run.effective_state() == "interrupted"
    run.write_status(state="done")
    assert run.effective_state() == "done"


def test_a_torn_metrics_line_is_skipped(tmp_path):
    run = Run.create(JobSpec(), tmp_path / "runs")
    run.append_metrics({"step": 1, "loss": 2.0})
    with open(run.folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')
    rows, offset = run.read_metrics()
    assert [r["step"] for r in rows] == [1]
    with open(run.folder / "metrics.jsonl", "a") as f:
        f.write('ss": 1.5}\n')
    more, _ = run.read_metrics(offset)
    assert more == [{"step": 2, "loss": 1.5}]


# -- the CLI, killed and resumed ------------------------------------------------------------------


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


def test_cli_train_describe_and_bad_spec(tmp_path):
    out = cli("train", "--describe")
    assert out.returncode == 0 and "[train]" in out.stdout and "checkpoint_every" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = -4\n")
    out = cli("train", str(bad))
    assert out.returncode == 2 and "batch_size" in out.stderr and "Traceback" not in out.stderr
    default = tmp_path / "default.toml"
    assert cli("train", "--write-default", str(default)).returncode == 0
    assert JobSpec.from_toml_file(default) == JobSpec()


def check_folder_is_whole(run: Run) -> None:
    status = run.status()
    assert status["state"] in ("queued", "running", "paused")
    assert run.effective_state() == "interrupted"
    run.spec  # readable
    run.metrics()  # readable
    for checkpoint in run.checkpoints():
        SAE.load(checkpoint)
        json.loads((checkpoint / "trainer.json").read_text())


def test_sigkill_at_random_moments_never_corrupts_and_always_resumes(tiny_model_dir, corpus, tmp_path):
    spec = tiny_spec(tiny_model_dir, corpus, steps=2000)
    spec.run.checkpoint_every = 37
    path = tmp_path / "job.toml"
    path.write_text(spec.to_toml())
    straight = Run.create(spec, tmp_path / "straight")
    assert execute(straight) == "done"

    env = {"DISTILLSCOPE_DATA_DIR": str(tmp_path / "data")}
    rng = random.Random(1)
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "train", str(path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = None
    for kill in range(3):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list_runs(tmp_path / "data" / "runs")
            if runs and runs[0].checkpoints() and (run is None or runs[0].status().get("step", 0) > last):
                run = runs[0]
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.4))
        assert proc.poll() is None, "the job ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_folder_is_whole(run)
        last = run.status().get("step", 0)
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "train", "--resume", str(run.folder)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=300) == 0
    assert run.status()["state"] == "done"
    assert run.read_log().count("resuming at step") == 3
    assert_same_weights(final_weights(straight), final_weights(run))
    assert not list(run.checkpoints_dir.glob(".tmp-*"))


def test_torchrun_two_processes_match_one_process(tiny_model_dir, corpus, tmp_path):
    spec = tiny_spec(tiny_model_dir, corpus, steps=30)
    path = tmp_path / "job.toml"
    path.write_text(spec.to_toml())
    env = {"DISTILLSCOPE_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    one = cli("train", str(path), env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--standalone", "-m", "core.cli",
                          "train", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert two.returncode == 0, two.stderr[-3000:]
    runs = list_runs(tmp_path / "data" / "runs")
    assert len(runs) == 2 and all(r.status()["state"] == "done" for r in runs)
    assert_same_weights(final_weights(runs[0]), final_weights(runs[1]), tol=1e-4)


def test_streamed_training_resumes_exactly_too(tiny_model_dir, corpus, tmp_path):
    spec = tiny_spec(tiny_model_dir, corpus, steps=30)
    spec.data.source = "stream"
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done"
    split = Run.create(spec, tmp_path / "runs")
    box, on_event = cancel_at(13)
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert execute(split) == "done"
    assert_same_weights(final_weights(straight), final_weights(split))
    assert not (Path(os.environ["DISTILLSCOPE_CACHE_DIR"]) / "activations").exists()  # nothing cached
