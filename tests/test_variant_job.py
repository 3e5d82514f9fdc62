"""The variant job (issue 6): a sibling of a tiny teacher fine-tuned on chosen blocks only, saved
as a Hugging Face folder that loads as a teacher; held-out loss goes down; exact resume; the
distillation objective; the spec's TOML round trip and its documented fields."""

import json

import pytest
import torch

from core.jobs import JobSpec, Run, execute
from core.jobs.runner import JobContext
from core.jobs.spec import SpecError, VariantConfig, describe_spec, parse_layers
from core.models import load_teacher
from tests.conftest import build_tiny_model
from tests.test_jobs import cancel_at, write_corpus

torch.set_num_threads(1)


def variant_spec(model_dir, corpus, steps=24, layers="1-2", **train) -> JobSpec:
    spec = JobSpec.for_kind("variant")
    spec.data.teacher = str(model_dir)
    spec.data.corpus = str(corpus)
    spec.data.max_length = 48
    spec.data.device = "cpu"
    spec.variant.layers = layers
    spec.train.total_steps = steps
    spec.train.batch_size = 4
    spec.train.lr = 3e-3
    spec.train.warmup_steps = 2
    spec.train.eval_every = 8
    spec.train.eval_documents = 8
    for key, value in train.items():
        setattr(spec.train, key, value)
    spec.run.checkpoint_every = 5
    spec.run.eval_fraction = 0.2
    return spec.validate()


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl", n=40)


def sharpen(source, folder):
    """A copy of a tiny model with its tied embedding 10x larger: a random head of std 0.02 can
    hardly move its logits, so training middle blocks could not change much; this one can."""
    teacher = load_teacher(source, device="cpu")
    with torch.no_grad():
        teacher.model.get_input_embeddings().weight.mul_(10.0)
    teacher.model.save_pretrained(str(folder))
    teacher.tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    return sharpen(tiny_model_dir, tmp_path_factory.mktemp("sharp") / "tiny-sharp")


def weights(folder) -> dict:
    teacher = load_teacher(folder, device="cpu")
    return {k: v.detach().clone() for k, v in teacher.model.state_dict().items()}


def test_the_variant_trains_only_its_blocks_lowers_the_loss_and_loads_as_a_teacher(sharp_model_dir, corpus, tmp_path):
    from core.pairs import check_same_tokenizer

    spec = variant_spec(sharp_model_dir, corpus)
    run = Run.create(spec, tmp_path / "runs")
    assert execute(run) == "done", run.status().get("error")
    folder = run.artifacts_dir / "variant"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert list(folder.glob("*.safetensors")) and (folder / "variant.json").exists()
    base, variant = weights(sharp_model_dir), weights(folder)
    assert base.keys() == variant.keys()
    changed = {k for k in base if not torch.equal(base[k], variant[k])}
    trained = {k for k in base if ".layers.1." in k or ".layers.2." in k}
    assert changed and changed <= trained, sorted(changed - trained)
    assert {k for k in trained if "weight" in k and "norm" not in k} <= changed  # every matrix moved
    report = json.loads((run.artifacts_dir / "evaluation.json").read_text())
    assert report["val_loss_after"] < report["val_loss_before"] - 0.5  # measured 6.51 -> 4.98
    assert report["layers"] == [1, 2] and report["steps"] == 24
    # The variant is a teacher with the same tokenizer: a pair.
    check_same_tokenizer(load_teacher(sharp_model_dir, device="cpu"), load_teacher(folder, device="cpu"))
    rows = run.metrics()
    assert rows[0]["step"] == 0 and "val_loss" in rows[0]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 25))
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 8, 16, 24]
    # The checkpoint holds only the trained blocks and their optimizer state.
    from safetensors.torch import load_file

    tensors = load_file(str(run.latest_checkpoint() / "trainer.safetensors"))
    assert {k.split(".")[2] for k in tensors if k.startswith("param.")} == {"1", "2"}
    assert any(k.startswith("opt.") and k.endswith("exp_avg_sq") for k in tensors)


def test_a_cancelled_variant_resumes_to_the_same_weights(tiny_model_dir, corpus, tmp_path):
    spec = variant_spec(tiny_model_dir, corpus, steps=14, layers="2")
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done"
    split = Run.create(spec, tmp_path / "runs")
    box, on_event = cancel_at(7)  # between checkpoints (every 5): the cancel writes its own
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert split.latest_checkpoint().name == "step-00000007"
    assert not (split.artifacts_dir / "variant").exists()
    assert execute(split) == "done"
    assert "resuming at step 7" in split.read_log()
    a, b = weights(straight.artifacts_dir / "variant"), weights(split.artifacts_dir / "variant")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra = json.loads((straight.artifacts_dir / "evaluation.json").read_text())
    rb = json.loads((split.artifacts_dir / "evaluation.json").read_text())
    assert ra["val_loss_after"] == rb["val_loss_after"] and ra["val_loss_before"] == rb["val_loss_before"]


def test_the_apps_teacher_is_copied_never_trained(sharp_model_dir, corpus, tmp_path):
    teacher = load_teacher(sharp_model_dir, device="cpu")
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    run = Run.create(variant_spec(sharp_model_dir, corpus, steps=4), tmp_path / "runs")
    lend = lambda source, device: teacher if teacher.loaded_as(source, device) else None  # noqa: E731
    assert execute(run, JobContext(run, teachers=lend)) == "done"
    assert "copying the teacher the app has loaded" in run.read_log()
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad is False for p in teacher.model.parameters())  # flags untouched
    changed = weights(run.artifacts_dir / "variant")
    assert not torch.equal(changed["model.layers.1.mlp.up_proj.weight"], before["model.layers.1.mlp.up_proj.weight"])


def test_distillation_moves_the_variant_towards_the_other_model(sharp_model_dir, corpus, tmp_path):
    other = sharpen(build_tiny_model(tmp_path / "other", seed=5), tmp_path / "other-sharp")  # same tokenizer
    spec = variant_spec(sharp_model_dir, corpus, steps=16, layers="all")
    spec.variant.objective = "distill"
    spec.variant.distill_from = str(other)
    run = Run.create(spec.validate(), tmp_path / "runs")
    assert execute(run) == "done", run.status().get("error")
    report = json.loads((run.artifacts_dir / "evaluation.json").read_text())
    assert report["val_kl_after"] < 0.8 * report["val_kl_before"]  # measured 1.28 -> 0.93
    assert all("lm_loss" in r for r in run.metrics() if "loss" in r)


def test_a_variant_of_blocks_the_model_lacks_or_of_a_stranger_fails_clearly(tiny_model_dir, corpus, tmp_path):
    run = Run.create(variant_spec(tiny_model_dir, corpus, layers="2-9"), tmp_path / "runs")
    assert execute(run) == "failed"
    assert "block 9 does not exist" in run.status()["error"]
    stranger = build_tiny_model(tmp_path / "llama", arch="llama")
    spec = variant_spec(tiny_model_dir, corpus)
    spec.variant.objective = "distill"
    spec.variant.distill_from = str(stranger)
    # Same tokenizer files: accepted. A different vocabulary is refused (see test_pairs).
    assert spec.validate().variant.distill_from == str(stranger)


def test_the_estimate_times_real_steps_and_counts_the_variant_on_disk(tiny_model_dir, corpus):
    from core.jobs.estimate import estimate
    from core.jobs.sae_job import load_documents

    spec = variant_spec(tiny_model_dir, corpus, steps=50)
    est = estimate(spec, load_documents(str(corpus)), calibration_steps=1)  # loads the model to time it
    assert est.tokens_counted and est.tokens > 0 and est.steps == 50
    assert est.seconds > 50 * est.seconds_per_step > 0
    model_bytes = sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors"))
    assert est.cache_bytes > 0.9 * model_bytes  # the saved variant, plus checkpoints
    lines = dict(est.lines())
    assert lines["Trained parameters"].endswith("(blocks 1-2)") and "Disk for the variant and checkpoints" in lines
    assert 2 < est.epochs < 10  # 50 steps of 4 over the ~32 training documents


def test_variant_spec_round_trips_and_is_documented():
    spec = JobSpec.for_kind("variant")
    spec.variant.layers = "2, 5, 7"
    spec.variant.objective = "distill"
    spec.variant.distill_from = "/models/other"
    spec.train.lr = 3e-4
    spec.run.name = "variant-demo"
    again = JobSpec.from_toml(spec.to_toml())
    assert again == spec and again.display_name() == "variant-demo"
    assert "[variant]" in spec.to_toml() and "[sae]" not in spec.to_toml()
    sections = describe_spec("variant")
    assert set(sections) == {"run", "data", "variant", "train"}
    assert {e["name"] for e in sections["variant"]} == {f for f in VariantConfig.__dataclass_fields__}
    for entries in sections.values():
        assert all(e["help"] for e in entries)
    assert parse_layers("3-6") == [3, 4, 5, 6] and parse_layers("0-1, 5") == [0, 1, 5]
    assert parse_layers("all", 3) == [0, 1, 2]


@pytest.mark.parametrize("text, words", [
    ("kind = 'variant'\n[variant]\nlayers = '6-3'\n", ["[variant]", "backwards"]),
    ("kind = 'variant'\n[variant]\nobjective = 'distill'\n", ["distill_from"]),
    ("kind = 'variant'\n[variant]\nobjective = 'rl'\n", ["objective", "lm"]),
    ("kind = 'variant'\n[train]\nbatch_size = 0\n", ["[train]", "batch_size"]),
    ("kind = 'variant'\n[sae]\nk = 3\n", ["sae"]),
])
def test_bad_variant_specs_say_what_is_wrong(text, words):
    with pytest.raises(SpecError) as info:
        JobSpec.from_toml(text)
    for word in words:
        assert word in str(info.value)


# -- text generated by another model (sequence-level distillation) --------------------------------


def generated_spec(model_dir, generator, corpus, steps=6) -> JobSpec:
    spec = variant_spec(model_dir, corpus, steps=steps, layers="1-2")
    spec.variant.text = "generated"
    spec.variant.generator = str(generator)
    spec.variant.prompt_words = 3
    spec.variant.max_new_tokens = 12
    return spec.validate()


def generated_rows(run) -> list[dict]:
    path = run.folder / "generated" / "corpus.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_variant_trains_on_text_another_model_generated_and_resumes_its_generation(
        sharp_model_dir, corpus, tmp_path, monkeypatch):
    from core.jobs import variant_job
    from core.jobs.sae_job import load_documents, split_documents

    monkeypatch.setattr(variant_job, "GENERATION_BATCH", 8)  # several batches from a small corpus
    other = build_tiny_model(tmp_path / "writer", seed=5)  # same tokenizer, other weights
    spec = generated_spec(sharp_model_dir, other, corpus)
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done", straight.status().get("error")
    rows = generated_rows(straight)
    train_docs, held_docs = split_documents(load_documents(str(corpus)), spec.run.eval_fraction)
    n_train, n_held = 6 * 4, min(len(held_docs), 8)  # as many as 6 steps of 4 read; eval_documents
    assert len(train_docs) > n_train
    assert [r["split"] for r in rows] == ["train"] * n_train + ["held_out"] * n_held
    assert len({r["id"] for r in rows}) == len(rows)
    texts = {d.id: d.text for d in train_docs + held_docs}
    for r in rows:  # the document's opening words, then the generator's own text
        assert r["prompt"] == " ".join(texts[r["source"]].split()[:3])
        assert r["text"].startswith(r["prompt"]) and r["text"] != texts[r["source"]]
    assert sum(r["new_tokens"] for r in rows) > 5 * len(rows)
    settings = json.loads((straight.folder / "generated" / "settings.json").read_text())
    assert settings["complete"] and settings["texts"] == len(rows) and settings["seconds"] > 0
    assert not (straight.folder / "generated" / "parts").exists()
    report = json.loads((straight.artifacts_dir / "evaluation.json").read_text())
    assert report["text"] == "generated" and report["generator"] == str(other)
    assert report["generated_texts"] == len(rows) and report["train_documents"] == n_train
    assert report["held_out_documents"] == n_held and report["generation_seconds"] > 0
    log = straight.read_log()
    assert f"generated {len(rows)} texts" in log and "texts generated from" in log
    info = json.loads((straight.artifacts_dir / "variant" / "variant.json").read_text())
    assert info["text"] == "generated" and info["generator"] == str(other)

    # Killed in the second batch of sampling: the first batch is kept, only the rest is sampled.
    split = Run.create(spec, tmp_path / "runs")
    box = {}

    def on_event(kind, run_id, payload):
        message = payload.get("message", "") if kind == "progress" else ""
        if box.get("training") and box["ctx"].step >= 3 or not box.get("training") and message.startswith(
                "Sampling texts 9-16"):
            box["ctx"].cancel()
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    parts = split.folder / "generated" / "parts"
    assert [p.name for p in parts.iterdir()] == ["batch-000000.json"]
    assert not (split.folder / "generated" / "corpus.jsonl").exists()
    assert split.latest_checkpoint() is None
    # Resumed, then cancelled in training: the generation goes on where it stopped, no duplicate.
    box["training"] = True
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert f"resuming the generated text: 8 of {len(rows)} texts are there" in split.read_log()
    assert generated_rows(split) == rows  # seeded per batch: the texts a straight run makes
    assert split.latest_checkpoint() is not None
    # Resumed again: the finished generation is reused (the generator is not even loaded).
    assert execute(split) == "done", split.status().get("error")
    assert "reusing the generated text" in split.read_log().split("resumed in process")[-1]
    assert generated_rows(split) == rows
    a, b = weights(straight.artifacts_dir / "variant"), weights(split.artifacts_dir / "variant")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_generated_text_needs_a_generator_of_the_same_tokenizer(tiny_model_dir, corpus, tmp_path):
    with pytest.raises(SpecError, match="generator"):
        JobSpec.from_toml("kind = 'variant'\n[variant]\ntext = 'generated'\n")
    spec = JobSpec.from_toml("kind = 'variant'\n[variant]\ntext = 'generated'\nobjective = 'distill'\n"
                             "distill_from = '/models/other'\n")
    assert spec.variant.generator_source() == "/models/other"  # distill_from by default
    assert spec.display_name() == "variant-distill-generated-layers-3-6"
    assert JobSpec.from_toml(spec.to_toml()) == spec
    # A generator with another vocabulary is refused before anything is sampled.
    from tests.test_pairs import build_model

    stranger = build_model(tmp_path / "small-vocab", vocab_size=330)
    run = Run.create(generated_spec(tiny_model_dir, stranger, corpus), tmp_path / "runs")
    assert execute(run) == "failed"
    assert "do not share a tokenizer" in run.status()["error"]
    assert not (run.folder / "generated" / "corpus.jsonl").exists()


def test_the_estimate_times_the_generation_before_launch(tiny_model_dir, corpus):
    from core.jobs.estimate import estimate
    from core.jobs.sae_job import load_documents

    spec = generated_spec(tiny_model_dir, tiny_model_dir, corpus, steps=50)  # the teacher writes its own text
    est = estimate(spec, load_documents(str(corpus)), calibration_steps=1)
    lines = dict(est.lines())
    assert "texts of up to 12 new tokens" in lines["Generated text"]
    assert "ms per token" in lines["Generation (measured)"]
    plain = estimate(variant_spec(tiny_model_dir, corpus, steps=50), load_documents(str(corpus)),
                     calibration_steps=1)
    assert "Generated text" not in dict(plain.lines())
    assert est.seconds > est.seconds_per_step * 50


def test_the_wizard_offers_generated_text_and_names_a_missing_generator(qtbot):
    pytest.importorskip("pytestqt")
    from gui.wizard import VARIANT_SUMMARY, TrainingWizard

    w = TrainingWizard()
    qtbot.addWidget(w)
    w.show()
    try:
        w.next()  # method
        w.method_page.set_architecture("variant")
        assert "text = 'generated'" in VARIANT_SUMMARY
        w.next()  # settings
        form = w.settings_page.forms["variant"]
        text = form.widgets["text"]
        assert [text.itemText(i) for i in range(text.count())] == ["corpus", "generated"]
        for name in ("generator", "prompt_words", "max_new_tokens", "generated_documents"):
            assert form.widgets[name].toolTip().startswith(VariantConfig.__dataclass_fields__[name].metadata["help"])
        text.setCurrentText("generated")
        w.next()
        assert w.currentPage() is w.settings_page and "'generator'" in w.settings_page.error.text()
        form.widgets["generator"].setText("bundled")
        spec = w.spec()
        assert spec.variant.text == "generated" and spec.variant.generator_source() == "bundled"
        assert JobSpec.from_toml(spec.to_toml()) == spec
    finally:
        w.reject()
        assert w.worker.is_finished()
