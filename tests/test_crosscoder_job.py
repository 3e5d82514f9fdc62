"""The crosscoder job (issue 6) on a tiny pair: it finishes, writes the crosscoder and
report.json, logs the metrics the Training tab draws, reuses its paired cache and resumes
exactly; 'run:NAME' names a variant run; a mismatched pair fails with the tokenizer's message;
the spec's TOML round trip and documented fields; `distillscope train` for both new kinds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.crosscoder import CLASSES, Crosscoder
from core.errors import DistillscopeError
from core.jobs import JobSpec, Run, execute, list_runs
from core.jobs.crosscoder_job import resolve_model_source
from core.jobs.runner import JobContext
from core.jobs.spec import DERIVED_CROSSCODER_FIELDS, SpecError, describe_spec
from tests.conftest import build_tiny_model
from tests.test_jobs import cancel_at, write_corpus

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sibling_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("sibling") / "tiny-sibling", seed=7)


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl", n=60)


def crosscoder_spec(base, variant, corpus, steps=30, architecture="batchtopk") -> JobSpec:
    spec = JobSpec.for_kind("crosscoder")
    spec.pair.base = str(base)
    spec.pair.variant = str(variant)
    spec.data.corpus = str(corpus)
    spec.data.hook = "resid_post.2"
    spec.data.max_length = 48
    spec.data.device = "cpu"
    spec.crosscoder.update(architecture=architecture, d_latent=64, k=4, l1_coefficient=1.0, threshold_lr=0.2)
    spec.train.total_steps = steps
    spec.train.batch_size = 64
    spec.train.warmup_steps = 3
    spec.train.lr = 3e-3
    spec.run.checkpoint_every = 10
    spec.run.eval_fraction = 0.2
    return spec.validate()


def final_tensors(run: Run) -> dict:
    cc = Crosscoder.load(run.artifacts_dir / "crosscoder")
    return {n: getattr(cc, n).detach().clone() for n in cc.tensor_names()}


def test_the_crosscoder_job_writes_the_crosscoder_its_report_and_live_metrics(tiny_model_dir, sibling_dir, corpus, tmp_path):
    spec = crosscoder_spec(tiny_model_dir, sibling_dir, corpus)
    run = Run.create(spec, tmp_path / "runs")
    assert execute(run) == "done", run.status().get("error")
    folder = run.artifacts_dir / "crosscoder"
    cc = Crosscoder.load(folder)
    assert cc.cfg.model_names == ["base", "variant"] and cc.cfg.hook == "resid_post.2"
    assert cc.cfg.model_sources == [str(tiny_model_dir), str(sibling_dir)] and cc.d_in == 32
    assert all(s != 1.0 for s in cc.cfg.input_scale)  # estimated from the first batch
    report = json.loads((folder / "report.json").read_text())
    assert sum(report["counts"].values()) == 64 and set(report["counts"]) == set(CLASSES)
    assert len(report["frequency"]) == len(report["relative_norm"]) == len(report["class"]) == 64
    never = sum(f == 0 for f in report["frequency"])
    assert never == report["never_fired"] and report["counts"]["dead"] >= never
    ev = report["evaluation"]
    assert 0 < ev["fve_base"] <= 1 and 0 < ev["fve_variant"] <= 1 and ev["n"] == report["held_out_tokens"] > 0
    assert sum(report["relative_norm_histogram"]["counts"]) == 64 - report["counts"]["dead"]
    rows = run.metrics()
    assert [r["step"] for r in rows] == list(range(1, 31))
    for key in ("loss", "fve_base", "fve_variant", "mse_base", "mse_variant", "l0", "dead_fraction", "lr"):
        assert key in rows[-1], key
    assert rows[-1]["loss"] < rows[0]["loss"]
    status = run.status()
    assert status["evaluation"]["fve_base"] == ev["fve_base"] and "variant_only" in status["evaluation"]
    # The cost estimate knows the paired cache is there now, and what a fresh one would take.
    from core.jobs.estimate import estimate
    from core.jobs.sae_job import load_documents
    from core.models import load_teacher

    documents = load_documents(str(corpus))
    est = estimate(spec, documents, teacher=load_teacher(tiny_model_dir, device="cpu"), calibration_steps=1)
    assert est.cache_reused and est.cache_bytes == 0 and est.seconds == est.seconds_per_step * 30
    fresh = estimate(crosscoder_spec(tiny_model_dir, sibling_dir, corpus, steps=40), documents[:20],
                     calibration_steps=1)  # no model loaded: width from config.json, tokens guessed
    assert not fresh.tokens_counted and not fresh.cache_reused and fresh.cache_bytes == fresh.tokens * 2 * 32 * 4
    assert fresh.seconds is None and fresh.steps == 40  # the models' speed is unknown without them
    assert any(label == "Crosscoder" and "64 latents over 2 x 32" in value for label, value in fresh.lines())


def test_a_cancelled_crosscoder_resumes_exactly_and_reuses_its_paired_cache(tiny_model_dir, sibling_dir, corpus, tmp_path):
    spec = crosscoder_spec(tiny_model_dir, sibling_dir, corpus, steps=30, architecture="l1")
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done"
    caches = sorted((Path(os.environ["DISTILLSCOPE_CACHE_DIR"]) / "activations").glob("pair-*"))
    assert len(caches) == 2  # training and held-out tokens
    split = Run.create(spec, tmp_path / "runs")
    box, on_event = cancel_at(13)  # between checkpoints: the cancel writes its own
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert split.latest_checkpoint().name == "step-00000013"
    assert not (split.artifacts_dir / "crosscoder").exists()
    assert execute(split) == "done"
    assert "resuming at step 13" in split.read_log()
    assert sorted((Path(os.environ["DISTILLSCOPE_CACHE_DIR"]) / "activations").glob("pair-*")) == caches
    a, b = final_tensors(straight), final_tensors(split)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ra = json.loads((straight.artifacts_dir / "crosscoder" / "report.json").read_text())
    rb = json.loads((split.artifacts_dir / "crosscoder" / "report.json").read_text())
    assert ra["class"] == rb["class"] and ra["frequency"] == rb["frequency"]


def test_a_variant_run_is_named_by_run_name_and_a_stranger_is_refused(tiny_model_dir, corpus, tmp_path):
    from tests.test_pairs import build_model
    from tests.test_variant_job import variant_spec

    with pytest.raises(DistillscopeError) as info:
        resolve_model_source("run:tiny-variant")
    assert "no variant run named 'tiny-variant'" in str(info.value)
    assert resolve_model_source("/some/folder") == "/some/folder"
    spec = variant_spec(tiny_model_dir, corpus, steps=4, layers="1-2")
    spec.run.name = "tiny-variant"
    unfinished = Run.create(spec.validate())
    with pytest.raises(DistillscopeError) as info:
        resolve_model_source("run:tiny-variant")
    assert "has finished" in str(info.value) and unfinished.id in str(info.value)
    done = Run.create(spec)
    assert execute(done) == "done"
    assert resolve_model_source("run:tiny-variant") == str(done.artifacts_dir / "variant")
    assert resolve_model_source(f"run:{done.id}") == str(done.artifacts_dir / "variant")
    run = Run.create(crosscoder_spec(tiny_model_dir, "run:tiny-variant", corpus, steps=5), tmp_path / "runs")
    assert execute(run) == "done", run.status().get("error")
    cc = Crosscoder.load(run.artifacts_dir / "crosscoder")
    assert cc.cfg.model_sources[1] == str(done.artifacts_dir / "variant")

    stranger = build_model(tmp_path / "stranger", vocab_size=330)
    bad = Run.create(crosscoder_spec(tiny_model_dir, stranger, corpus), tmp_path / "runs")
    assert execute(bad) == "failed"
    error = bad.status()["error"]
    assert "do not share a tokenizer" in error and "Traceback" not in error


def test_crosscoder_spec_round_trips_and_is_documented():
    spec = JobSpec.for_kind("crosscoder")
    spec.pair.base = "/models/base"
    spec.pair.variant = "run:variant-demo"
    spec.crosscoder.update(architecture="l1", d_latent=2048, l1_coefficient=3.0)
    spec.train.total_steps = 500
    spec.data.hook = "resid_post.4"
    spec.validate()
    assert spec.data.teacher == "/models/base"  # [pair] base is the teacher
    text = spec.to_toml()
    assert "[pair]" in text and "[crosscoder]" in text and "teacher" not in text.split("[pair]")[0]
    again = JobSpec.from_toml(text)
    assert again == spec and again.display_name() == "crosscoder-l1-2048-resid_post.4"
    sections = describe_spec("crosscoder")
    assert set(sections) == {"run", "data", "pair", "crosscoder", "train"}
    assert not {e["name"] for e in sections["crosscoder"]} & set(DERIVED_CROSSCODER_FIELDS)
    assert "teacher" not in {e["name"] for e in sections["data"]}
    for entries in sections.values():
        assert all(e["help"] for e in entries)
    cfg = spec.crosscoder_config(d_in=640, sources=("a", "b"))
    assert cfg.d_latent == 2048 and cfg.hook == "resid_post.4" and cfg.model_sources == ["a", "b"]


@pytest.mark.parametrize("text, words", [
    ("kind = 'crosscoder'\n[pair]\nvariant = ' '\n", ["[pair]", "'variant'"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\n[crosscoder]\nd_in = 8\n", ["d_in"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\n[crosscoder]\narchitecture = 'topk'\n", ["architecture"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\n[data]\nsource = 'stream'\n", ["paired activation cache"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\nbase = 'a'\n[data]\nteacher = 'b'\n", ["[pair] base"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\n[train]\ntotal_steps = 0\n", ["[train]", "total_steps"]),
    ("kind = 'crosscoder'\n[pair]\nvariant = 'v'\ntokenizer_check = 'loose'\n", ["tokenizer_check"]),
])
def test_bad_crosscoder_specs_say_what_is_wrong(text, words):
    with pytest.raises(SpecError) as info:
        JobSpec.from_toml(text)
    for word in words:
        assert word in str(info.value)


def test_data_teacher_may_name_the_base_when_it_agrees():
    spec = JobSpec.from_toml("kind = 'crosscoder'\n[pair]\nvariant = 'v'\n[data]\nteacher = '/m/base'\n")
    assert spec.pair.base == spec.data.teacher == "/m/base"


def test_distillscope_train_runs_both_new_kinds(tiny_model_dir, corpus, tmp_path):
    from tests.test_variant_job import variant_spec

    variant = variant_spec(tiny_model_dir, corpus, steps=3, layers="2")
    variant.run.name = "cli-variant"
    cc = crosscoder_spec(tiny_model_dir, "run:cli-variant", corpus, steps=5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISTILLSCOPE_DATA_DIR": str(tmp_path / "data"),
           "OMP_NUM_THREADS": "1"}
    for name, spec in (("variant.toml", variant), ("crosscoder.toml", cc)):
        (tmp_path / name).write_text(spec.to_toml())
        out = subprocess.run([sys.executable, "-m", "core.cli", "train", str(tmp_path / name)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    runs = list_runs(tmp_path / "data" / "runs")
    assert [r.spec.kind for r in runs][::-1] == ["variant", "crosscoder"]
    assert all(r.status()["state"] == "done" for r in runs)
    assert (runs[0].artifacts_dir / "crosscoder" / "report.json").exists()
