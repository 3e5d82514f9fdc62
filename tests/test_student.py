"""The tiny student (seed 000): z-normalization and pooling against hand computations, vectors
that do not depend on batching, save/load, the training job (learns, resumes exactly, stops
early on a plateau), its spec, the embed command, and the classification head."""

import json
import math

import pytest
import torch

from core.errors import DistillscopeError
from core.jobs import JobSpec, Run, execute
from core.jobs.runner import JobContext
from core.jobs.spec import SpecError
from core.student import Student, StudentConfig, StudentModel
from core.student.data import LENGTH_POOL, build_data, document_reference, epoch_order
from core.student.model import masked_mean
from tests.test_jobs import write_corpus


def tiny_student_spec(model_dir, corpus, **train) -> JobSpec:
    spec = JobSpec.for_kind("student")
    spec.data.teacher, spec.data.corpus = str(model_dir), str(corpus)
    spec.data.hook, spec.data.max_length = "resid_post.2", 64
    spec.student = StudentConfig(n_layers=2, d_hidden=32, n_heads=2, d_embed=16, d_mlp=64,
                                 max_positions=64)
    spec.run.eval_fraction = 0.2
    spec.run.checkpoint_every = 10
    for key, value in {"batch_size": 8, "epochs": 6, "eval_every": 5, "warmup_steps": 5,
                       "lr": 3e-3, "patience": 0, **train}.items():
        setattr(spec.train, key, value)
    return spec.validate()


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs.jsonl", n=60)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One finished student run on the tiny teacher, shared by the tests that only read it."""
    import os
    root = tmp_path_factory.mktemp("student-run")
    os.environ["DISTILLSCOPE_CACHE_DIR"] = str(root / "cache")
    corpus = write_corpus(root / "docs.jsonl", n=60)
    run = Run.create(tiny_student_spec(tiny_model_dir, corpus, epochs=12), root / "runs")
    assert execute(run) == "done", run.status()
    return run


# -- maths ----------------------------------------------------------------------------------------


def test_z_normalization_and_masked_pooling_by_hand():
    pooled = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 13.0]])
    ref = document_reference(pooled[:2], "train", "resid_post.0")  # training split only
    assert ref.mean.tolist() == [2.0, 10.0] and ref.std.tolist() == [1.0, 0.0]
    parts = document_reference([pooled[:1], pooled[1:2]], "train", "resid_post.0")  # token rows per document
    assert parts.mean.tolist() == [2.0, 10.0] and parts.std.tolist() == [1.0, 0.0] and parts.count == 2
    data = build_data([[1, 5], [1, 6], [1, 7]], pooled, ref)
    assert torch.allclose(data.doc_z[2], torch.tensor([3.0, 3.0 / 1e-6]), rtol=1e-5)
    x = torch.tensor([[[1.0], [2.0], [6.0]], [[4.0], [0.0], [0.0]]])
    keep = torch.tensor([[0, 1, 1], [1, 0, 0]]).unsqueeze(-1).float()
    assert masked_mean(x, keep).flatten().tolist() == [4.0, 4.0]
    assert masked_mean(x, torch.zeros_like(keep)).flatten().tolist() == [0.0, 0.0]


def test_content_mask_leaves_out_bos_and_padding():
    model = StudentModel(StudentConfig(n_layers=1, d_hidden=8, n_heads=2, d_embed=4, d_mlp=8,
                                       max_positions=8), vocab_size=10, d_out=3, bos_id=1)
    ids = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert model.content(ids, mask).tolist() == [[False, True, True, False], [False, True, False, False]]
    doc, tok = model(ids, mask, at=(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1])))
    assert torch.allclose(doc[0], tok[0:2].mean(0), atol=1e-6)  # pool of token predictions
    assert torch.allclose(doc[1], tok[2], atol=1e-6)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_causal_attention_sees_only_earlier_tokens_and_ignores_padding(precision):
    from core.activations import pad_batch

    torch.manual_seed(0)
    cfg = StudentConfig(n_layers=2, d_hidden=16, n_heads=2, d_embed=8, d_mlp=16, max_positions=16,
                        attention="causal")
    model = StudentModel(cfg, vocab_size=20, d_out=4, bos_id=1).eval()
    long, short = [1, 9, 8, 7, 6, 5, 4], [1, 3, 2]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    with torch.no_grad(), autocast:
        full = model.hidden(*pad_batch([long], 0))[0].float()
        prefix = model.hidden(*pad_batch([long[:3]], 0))[0].float()
        alone = model(*pad_batch([short], 0)).float()
        padded = model(*pad_batch([short, long], 0))[0].float()
    # A token's state depends only on the tokens up to it (as the teacher's), so a prefix
    # gives the same states; the padding on the right changes nothing.
    assert torch.allclose(full[:3], prefix, atol=1e-5 if precision == "float32" else 2e-2)
    assert torch.allclose(alone[0], padded, atol=1e-5 if precision == "float32" else 2e-2)
    bidirectional = StudentModel(StudentConfig(**{**cfg.to_dict(), "attention": "bidirectional"}),
                                 vocab_size=20, d_out=4, bos_id=1).eval()
    bidirectional.load_state_dict(model.state_dict())
    with torch.no_grad():
        seen_later = bidirectional.hidden(*pad_batch([long], 0))[0, :3]
    assert not torch.allclose(seen_later, full[:3], atol=1e-3)  # the encoder sees later tokens


def test_token_targets_of_a_batch_and_their_loss_by_hand():
    """The batch holds only the rows that count, at their padded places; the training loss is
    their MSE, as if computed on the padded batch with the padding masked out."""
    from core.student.data import StudentData
    from core.student.train import StudentTrainConfig, StudentTrainer

    tokens = [[1, 5, 6], [1, 7], [1]]  # the last is empty after BOS
    positions = [torch.tensor([1, 2]), torch.tensor([1]), torch.tensor([], dtype=torch.long)]
    rows = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0]]), torch.zeros(0, 2)]
    data = StudentData(tokens, torch.zeros(3, 2), rows, positions)
    b = data.batch([1, 0, 2], pad_id=0)
    assert b["token_row"].tolist() == [0, 1, 1] and b["token_pos"].tolist() == [1, 1, 2]
    assert b["token_z"].tolist() == [[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]
    model = StudentModel(StudentConfig(n_layers=1, d_hidden=8, n_heads=2, d_embed=4, d_mlp=8,
                                       max_positions=8, target="tokens"), vocab_size=10, d_out=2, bos_id=1)
    with torch.no_grad():
        model.out.bias.fill_(1.0)
        model.out.weight.zero_()  # every token predicts (1, 1)
    trainer = StudentTrainer(model, StudentTrainConfig(batch_size=3, lr=1e-9), data, data, 0)
    trainer._order = (0, [[1, 0, 2]])
    expected = sum((v - 1.0) ** 2 for v in (5, 6, 1, 2, 3, 4)) / 6  # 3 tokens x 2 dimensions
    assert trainer.train_step()["loss"] == pytest.approx(expected)


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    lengths = list(range(50))
    a = epoch_order(50, 8, seed=1, epoch=3, lengths=lengths)
    assert sorted(i for b in a for i in b) == list(range(50))
    assert a == epoch_order(50, 8, seed=1, epoch=3, lengths=lengths)
    assert a != epoch_order(50, 8, seed=1, epoch=4, lengths=lengths)


def test_batches_of_similar_length_pad_little():
    # Short documents with a long tail, as the demo corpus (median 29 tokens, 10% over 98)
    g = torch.Generator().manual_seed(0)
    lengths = (5 + torch.empty(4000).exponential_(generator=g) * 40).clamp(max=256).long().tolist()

    def padding(pool):
        batches = epoch_order(len(lengths), 32, seed=0, epoch=0, lengths=lengths, pool=pool)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths)

    assert padding(LENGTH_POOL) < 1.15 < 1.3 < padding(8) < padding(1)


# -- the job --------------------------------------------------------------------------------------


def test_training_lowers_validation_mse_and_writes_the_student(trained):
    evals = [row for row in trained.metrics() if "val_mse" in row]
    assert len(evals) >= 3
    # 48 training documents of word salad from a random teacher: the student generalizes a
    # little (a bag-of-tokens ridge regression reaches about 0.65)
    assert evals[-1]["best_val_mse"] < 0.95 * evals[0]["val_mse"]
    assert all(math.isfinite(row["loss"]) for row in trained.metrics() if "loss" in row)
    report = json.loads((trained.artifacts_dir / "evaluation.json").read_text())
    assert report["val_mse"] == pytest.approx(evals[-1]["best_val_mse"], rel=1e-4)
    assert 0 < report["val_cosine"] <= 1 and report["steps"] > 0 and report["train_docs_per_s"] > 0
    assert trained.status()["evaluation"]["val_cosine"] == pytest.approx(report["val_cosine"])


def test_vectors_do_not_depend_on_batching_or_padding(trained):
    student = Student.load(trained.folder)  # a run folder opens its artifacts/student
    texts = ["a stitch in time saves nine", "love", "the quick brown fox jumps over the lazy dog " * 3,
             "", "science is organised knowledge. eat your vegetables"]
    together = student.vectors(texts, batch_size=5)
    alone = torch.cat([student.vectors([t]) for t in texts])
    reordered = student.vectors(texts[::-1], batch_size=2).flip(0)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together, reordered, atol=1e-5, rtol=1e-5)
    assert together.shape == (5, student.d_model)
    quick = student.vectors(texts, quick=True)  # bfloat16 autocast where the CPU has AMX
    assert torch.nn.functional.cosine_similarity(quick, together).min() > 0.98


def test_save_load_round_trip_gives_identical_vectors_without_the_teacher(trained, tmp_path):
    student = Student.load(trained.artifacts_dir / "student")
    texts = ["all that glitters is not gold", "computers are fast"]
    student.save(tmp_path / "copy")
    again = Student.load(tmp_path / "copy")
    assert torch.equal(student.vectors(texts), again.vectors(texts))
    assert again.hook == "resid_post.2" and again.teacher["d_model"] == 32
    assert again.tokenize(["love"]) == student.tokenize(["love"])
    raw = again.vectors(texts, raw=True)
    torch.testing.assert_close(again.normalize(raw), again.vectors(texts), atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".copy*"))  # no temporary folder left behind


@pytest.mark.parametrize("damage, words", [
    (lambda f: (f / "student.json").unlink(), ["not a student folder"]),
    (lambda f: (f / "student.json").write_text("{not json"), ["cannot be read"]),
    (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 10), ["cannot be read"]),
    (lambda f: (f / "reference.safetensors").unlink(), ["reference"]),
    (lambda f: (f / "tokenizer.json").unlink() or (f / "tokenizer_config.json").unlink(), ["tokenizer"]),
])
def test_damaged_student_folders_say_what_is_wrong(trained, tmp_path, damage, words):
    folder = Student.load(trained.folder).save(tmp_path / "s")
    damage(folder)
    with pytest.raises(DistillscopeError) as info:
        Student.load(folder)
    for word in words:
        assert word in str(info.value)


def test_wrong_shapes_are_refused(trained, tmp_path):
    folder = Student.load(trained.folder).save(tmp_path / "s")
    meta = json.loads((folder / "student.json").read_text())
    meta["d_out"] = 48
    (folder / "student.json").write_text(json.dumps(meta))
    with pytest.raises(DistillscopeError, match="shape"):
        Student.load(folder)
    with pytest.raises(DistillscopeError, match="does not exist"):
        Student.load(tmp_path / "nowhere")


def cancel_at(step: int):
    box = {}

    def on_event(kind, run_id, payload):
        if kind == "progress" and box["ctx"].step >= step:
            box["ctx"].cancel()
    return box, on_event


def test_n_steps_cancel_resume_equals_straight(tiny_model_dir, corpus, tmp_path):
    spec = tiny_student_spec(tiny_model_dir, corpus, epochs=4, patience=3, min_delta=0.0)
    straight = Run.create(spec, tmp_path / "runs")
    assert execute(straight) == "done"

    split = Run.create(spec, tmp_path / "runs")
    box, on_event = cancel_at(13)  # between checkpoints and between validations
    box["ctx"] = JobContext(split, on_event)
    assert execute(split, box["ctx"]) == "cancelled"
    assert split.latest_checkpoint().name == "step-00000013"
    assert not (split.artifacts_dir / "student").exists()
    assert execute(split) == "done"
    assert "resuming at step 13" in split.read_log()
    a, b = Student.load(straight.folder), Student.load(split.folder)
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], atol=1e-6, rtol=1e-6, msg=key)
    ea = json.loads((straight.artifacts_dir / "evaluation.json").read_text())
    eb = json.loads((split.artifacts_dir / "evaluation.json").read_text())
    assert ea["steps"] == eb["steps"] and ea["val_mse"] == pytest.approx(eb["val_mse"], rel=1e-5)


def test_early_stopping_on_a_plateau_keeps_the_best_weights(tiny_model_dir, corpus, tmp_path):
    # lr 0 after the warm-up's first steps: validation cannot improve, so it stops at patience
    spec = tiny_student_spec(tiny_model_dir, corpus, lr=1e-7, epochs=50, eval_every=2, patience=3,
                             min_delta=0.01)
    run = Run.create(spec, tmp_path / "runs")
    assert execute(run) == "done"
    report = json.loads((run.artifacts_dir / "evaluation.json").read_text())
    assert report["stopped_early"] and report["steps"] == 8 and report["best_step"] == 2
    assert "early stop" in run.read_log()


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_token_level_targets_train_and_give_document_vectors(tiny_model_dir, corpus, tmp_path,
                                                             precision):
    from core.activations import ActivationCache

    spec = tiny_student_spec(tiny_model_dir, corpus, epochs=3, precision=precision)
    spec.student.target = "tokens"
    spec.data.precision = precision
    run = Run.create(spec.validate(), tmp_path / "runs")
    assert execute(run) == "done", run.status()
    evals = [row for row in run.metrics() if "val_mse" in row]
    assert evals[-1]["best_val_mse"] < evals[0]["val_mse"]
    log = (run.folder / "log.txt").read_text()
    cache = ActivationCache(log.split("activation cache (tokens): ")[1].splitlines()[0])
    assert cache.manifest["key"]["settings"].get("precision", "exact").split(":")[0] == precision
    student = Student.load(run.folder)
    assert student.token_reference is not None
    v = student.vectors(["a stitch in time", "love is kind"])
    assert v.shape == (2, 32) and torch.isfinite(v).all()


def test_fast_training_step_is_close_to_float32():
    from core.models import cpu_has_amx
    from core.student.data import StudentData
    from core.student.train import StudentTrainConfig, StudentTrainer

    g = torch.Generator().manual_seed(0)
    tokens = [[1] + torch.randint(3, 50, (n,), generator=g).tolist() for n in (5, 9, 7, 12)]
    positions = [torch.arange(1, len(t)) for t in tokens]
    data = StudentData(tokens, torch.randn(4, 24, generator=g),
                       [torch.randn(len(p), 24, generator=g) for p in positions], positions)
    losses = {}
    for precision in ("exact", "fast"):
        torch.manual_seed(0)
        model = StudentModel(StudentConfig(n_layers=2, d_hidden=32, n_heads=2, d_embed=16, d_mlp=64,
                                           max_positions=16, target="tokens"), 50, 24, 1)
        trainer = StudentTrainer(model, StudentTrainConfig(batch_size=4, precision=precision), data, data, 0)
        losses[precision] = trainer.train_step()["loss"]
        assert next(model.parameters()).dtype == torch.float32  # master weights stay float32
    assert abs(losses["fast"] - losses["exact"]) < 0.02 * losses["exact"]
    assert (losses["fast"] != losses["exact"]) == cpu_has_amx()  # bfloat16 really ran with AMX


def test_training_attention_runs_in_float32_on_a_cpu_under_bfloat16_autocast():
    import torch.nn.functional as F

    from core.student.model import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 7, 8, generator=g) for _ in range(3))
    key_ok = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    key_ok[0, ..., 5:] = False  # padding keys of the first document
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), key_ok, 0.0)
    assert out.dtype == torch.bfloat16  # the block's dtype is kept
    # inputs rounded to bfloat16 once, the attention itself in float32: within bfloat16 rounding
    assert torch.allclose(out.float(), exact, atol=0.03)
    assert torch.equal(attention(q, k, v, key_ok, 0.0), exact)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # inference: bfloat16 kept
        fast = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), key_ok, 0.0)
        assert torch.equal(fast, F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                                                 attn_mask=key_ok))


def test_inference_path_in_place_equals_the_training_path():
    """Without gradients the blocks add into the residual stream in place; the outputs must
    be the training path's, with padding, in float32 and under bfloat16 autocast."""
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(n_layers=2, d_hidden=32, n_heads=2, d_embed=16, d_mlp=48,
                                       max_positions=16), 50, 24, 1).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):  # trained biases are not the initial zeros
                param.normal_(0, 0.1)
    ids = torch.randint(3, 50, (3, 9))
    ids[:, 0] = 1
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:], mask[2, 2:] = 0, 0  # two padded documents, one nearly empty
    at = (torch.tensor([0, 1, 2]), torch.tensor([8, 5, 1]))
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            doc, tok = model(ids, mask, at=at)  # gradients on: the out-of-place path
            with torch.no_grad():
                doc_fast, tok_fast = model(ids, mask, at=at)
        tol = 1e-5 if not autocast else 2e-2
        assert torch.allclose(doc_fast.float(), doc.detach().float(), atol=tol)
        assert torch.allclose(tok_fast.float(), tok.detach().float(), atol=tol)
        assert torch.isfinite(doc_fast).all()


# -- spec -----------------------------------------------------------------------------------------


def test_student_spec_round_trips_and_bad_values_name_the_field():
    spec = JobSpec.for_kind("student")
    spec.student.n_layers, spec.train.patience, spec.student.target = 3, 2, "tokens"
    text = spec.to_toml()
    assert "[student]" in text and "[sae]" not in text
    assert JobSpec.from_toml(text) == spec
    assert type(JobSpec(kind="student").train) is type(spec.train)  # a student's own [train]
    for bad, words in [("[student]\nn_heads = 3\n", ["d_hidden", "n_heads"]),
                       ("[student]\nd_hidden = 2\n", ["[student]", "d_hidden", "at least 8"]),
                       ("[train]\nbatch_size = 0\n", ["[train]", "batch_size"]),
                       ("[train]\ntotal_tokens = 5\n", ["total_tokens", "[train]"]),
                       ("[student]\ntarget = 'words'\n", ["target", "pooled"]),
                       ("[data]\nsource = 'stream'\n", ["cache"]),
                       ("[data]\nmax_length = 1024\n", ["max_positions"]),
                       ("[sae]\nk = 4\n", ["sae"])]:
        with pytest.raises(SpecError) as info:
            JobSpec.from_toml("kind = 'student'\n" + bad)
        for word in words:
            assert word in str(info.value), (bad, str(info.value))


# -- CLI ------------------------------------------------------------------------------------------


def test_embed_cli_writes_vectors_and_ids(trained, tiny_model_dir, corpus, tmp_path, capsys):
    from safetensors import safe_open

    from core.cli import main

    out = tmp_path / "vecs.safetensors"
    assert main(["embed", str(corpus), "-o", str(out), "--model", str(trained.folder)]) == 0
    with safe_open(str(out), "pt") as f:
        vectors, meta = f.get_tensor("vectors"), f.metadata()
    ids = json.loads(meta["ids"])
    assert vectors.shape == (60, 32) and ids[:2] == ["d0", "d1"] and meta["hook"] == "resid_post.2"
    assert json.loads(out.with_suffix(".json").read_text())["ids"] == ids
    student = Student.load(trained.folder)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    torch.testing.assert_close(vectors[:3], student.vectors(texts[:3]), atol=1e-5, rtol=1e-5)

    teacher_out = tmp_path / "t.safetensors"
    assert main(["embed", str(corpus), "-o", str(teacher_out), "--model", "teacher", "--teacher",
                 str(tiny_model_dir), "--hook", "resid_post.2"]) == 0
    with safe_open(str(teacher_out), "pt") as f:
        z = f.get_tensor("vectors")
    assert z.shape == (60, 32) and z.mean(0).abs().max() < 1e-3  # z-scored against the corpus

    capsys.readouterr()
    assert main(["embed", str(corpus), "-o", str(out), "--model", str(tmp_path)]) == 2
    assert "neither 'teacher' nor a student folder" in capsys.readouterr().err
    assert main(["embed", str(corpus), "-o", str(out), "--model", str(trained.folder),
                 "--hook", "resid_post.1"]) == 2
    assert "resid_post.2" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "missing.txt"), "-o", str(out)]) == 2
    assert main(["embed", str(corpus), "-o", str(tmp_path / "v.npy"), "--model", str(trained.folder)]) == 2


def test_cli_describes_and_writes_a_student_spec(tmp_path, capsys):
    from core.cli import main

    assert main(["train", "--describe", "--kind", "student"]) == 0
    text = capsys.readouterr().out
    assert "[student]" in text and "patience" in text and "d_embed" in text
    path = tmp_path / "s.toml"
    assert main(["train", "--write-default", str(path), "--kind", "student"]) == 0
    assert JobSpec.from_toml_file(path) == JobSpec.for_kind("student")
    from pathlib import Path
    example = JobSpec.from_toml_file(Path(__file__).resolve().parent.parent / "examples" / "student-demo.toml")
    example.run.name = ""
    assert example == JobSpec.for_kind("student")  # a new student in the wizard is the demo recipe


def test_cost_estimate_shows_the_token_targets_extra_cost(tiny_teacher, corpus):
    from core.documents import load_paths
    from core.jobs.estimate import estimate

    docs = load_paths([str(corpus)]).documents
    spec = tiny_student_spec(tiny_teacher.source, corpus)
    pooled = estimate(spec, docs, tiny_teacher, calibration_steps=1)
    spec.student.target = "tokens"
    tokens = estimate(spec, docs, tiny_teacher, calibration_steps=1)
    from core.jobs.sae_job import split_documents
    n_train = len(split_documents(docs, spec.run.eval_fraction)[0])
    assert pooled.steps == tokens.steps == spec.train.epochs * math.ceil(n_train / 8)
    assert tokens.cache_bytes > 10 * pooled.cache_bytes and tokens.memory_bytes > pooled.memory_bytes
    assert any("Token-level" in note for note in tokens.notes)
    assert pooled.seconds is not None and pooled.seconds_per_step > 0


def test_cost_estimate_times_batches_of_the_corpus_from_short_to_long():
    """A step's time grows with its longest document, so the estimate times real batches at
    quantiles of their padded size, not one batch of mean-length documents."""
    from core.jobs.estimate import calibration_batches
    from core.student.train import StudentTrainConfig

    token_lists = [[2] * n for n in range(2, 402)]  # 400 documents of 2..401 tokens
    picks = calibration_batches(token_lists, StudentTrainConfig(batch_size=10), steps=3)
    assert len(picks) == 6 and all(len(b) == 10 for b in picks)
    widths = [max(b) for b in picks]
    assert widths == sorted(widths) and widths[0] < 100 and widths[-1] > 300
    assert calibration_batches([[2, 5]], StudentTrainConfig(batch_size=10), steps=3) == [[2]]


# -- classification head --------------------------------------------------------------------------


def test_classification_head_beats_chance_on_a_separable_task(trained):
    from core.progress import TaskState
    from core.student.classify_head import _auc, finetune_classifier

    assert _auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert _auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # ties count half
    student = Student.load(trained.folder)
    import random
    rng = random.Random(0)
    pos_words, neg_words = "love kind patient bold".split(), "computers fast slow science".split()

    def make(n):
        texts, labels = [], []
        for i in range(n):
            words = pos_words if i % 2 else neg_words
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))))
            labels.append(i % 2)
        return texts, labels
    train_texts, train_labels = make(48)
    held_texts, held_labels = make(24)
    before = [p.clone() for p in student.model.parameters()]
    result = finetune_classifier(student, train_texts, train_labels, held_texts, held_labels,
                                 epochs=3, state=TaskState())
    assert result.auc > 0.9
    assert all(torch.equal(a, b) for a, b in zip(before, student.model.parameters()))  # a copy
    probs = result.classify(["love love kind", "science computers"])
    assert probs[0] > probs[1]
    state = TaskState()
    state.cancel()
    from core.errors import Cancelled
    with pytest.raises(Cancelled):
        finetune_classifier(student, train_texts, train_labels, held_texts, held_labels, state=state)
    with pytest.raises(DistillscopeError, match="one class"):
        finetune_classifier(student, train_texts, [1] * 48, held_texts, held_labels)
