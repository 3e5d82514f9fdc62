import json
import threading

import pytest
import torch

from core.activations import (ActivationCache, ExtractSettings, document_activations, extract,
                              pad_batch, plan_batches)
from core.documents import Document
from core.errors import CacheError, Cancelled
from core.models import HookPoint, capture
from core.progress import TaskState

WORDS = "the quick brown fox jumps over lazy dog love is kind science organised knowledge".split()


def make_docs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    docs = []
    for i in range(n):
        length = int(torch.randint(1, 40, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (length,), generator=g)]
        docs.append(Document(id=f"d{i}", text=" ".join(words), source="test", label=f"c{i % 3}"))
    return docs


def reference(teacher, doc, hook):
    """One document alone, no padding: the plain way."""
    ids, mask = pad_batch(teacher.tokenize([doc.text], 256), teacher.pad_id)
    return capture(teacher, ids, mask, [hook])[hook][0], ids[0]


def test_plan_batches_respects_budget_and_covers_all():
    lengths = [5, 50, 7, 48, 3, 30, 30, 1]
    batches = plan_batches(lengths, 100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1


def test_pooled_matches_per_document_mean(tiny_teacher, tmp_path):
    docs = make_docs(23)
    s = ExtractSettings(hook="resid_post.2", mode="pooled", batch_tokens=256, shard_mb=1)
    cache = extract(tiny_teacher, docs, tmp_path / "c", s)
    pooled = cache.pooled()
    hook = HookPoint("resid_post", 2)
    for i in (0, 5, 22):
        acts, ids = reference(tiny_teacher, docs[i], hook)
        want = acts[ids != tiny_teacher.bos_id].mean(0)  # BOS excluded from the mean
        torch.testing.assert_close(pooled[i], want, atol=1e-4, rtol=1e-4)
    mean, std = cache.stats()
    torch.testing.assert_close(mean, pooled.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(std, pooled.std(0, unbiased=False), atol=1e-4, rtol=1e-3)
    m = cache.manifest
    assert m["n_documents"] == 23 and m["document_ids"][3] == "d3" and m["labels"][4] == "c1"
    assert m["hook"] == "resid_post.2" and m["complete"]


def test_token_mode_rows_and_stats(tiny_teacher, tmp_path):
    docs = make_docs(17, seed=1)
    s = ExtractSettings(hook="mlp_out.1", mode="tokens", batch_tokens=128, shard_mb=1)
    cache = extract(tiny_teacher, docs, tmp_path / "c", s)
    lens = [len(t) - 1 for t in tiny_teacher.tokenize([d.text for d in docs], 256)]  # minus BOS
    assert cache.manifest["n_rows"] == sum(lens) == cache.manifest["n_tokens"]
    rows = {}
    for shard in cache.shards():
        for r in range(shard["acts"].shape[0]):
            rows[(int(shard["doc_index"][r]), int(shard["position"][r]))] = shard["acts"][r]
    acts, ids = reference(tiny_teacher, docs[7], HookPoint("mlp_out", 1))
    for pos in range(1, len(ids)):
        torch.testing.assert_close(rows[(7, pos)], acts[pos], atol=1e-4, rtol=1e-4)
    all_rows = torch.stack(list(rows.values()))
    torch.testing.assert_close(cache.stats()[0], all_rows.mean(0), atol=1e-4, rtol=1e-4)


def test_shards_bounded_and_written_atomically(tiny_teacher, tmp_path):
    docs = make_docs(200, seed=2)
    s = ExtractSettings(hook="resid_post.0", mode="tokens", batch_tokens=64, shard_mb=1)
    # 1 MB shards of 32-wide float32 rows hold at most ~8k rows plus one batch.
    cache = extract(tiny_teacher, docs, tmp_path / "c", s)
    assert all(sh["rows"] <= 8192 + 64 for sh in cache.manifest["shards"])
    assert not list((tmp_path / "c").glob(".*tmp*"))


def test_cancel_then_resume_gives_identical_cache(tiny_teacher, tmp_path):
    docs = make_docs(120, seed=3)
    s = ExtractSettings(hook="resid_post.3", mode="pooled", batch_tokens=64)
    straight = extract(tiny_teacher, docs, tmp_path / "straight", s)

    # A shard per batch (flush_seconds=0), cancelled half-way through.
    s_small = ExtractSettings(hook="resid_post.3", mode="pooled", batch_tokens=64, flush_seconds=0)
    state = TaskState(lambda done, total, msg: state.cancel() if done >= 60 else None)
    with pytest.raises(Cancelled):
        extract(tiny_teacher, docs, tmp_path / "resumed", s_small, state)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert not partial["complete"] and len(partial["shards"]) > 1
    with pytest.raises(CacheError, match="unfinished"):
        ActivationCache(tmp_path / "resumed")
    done_before = {d for sh in partial["shards"] for d in sh["documents"]}
    assert 60 <= len(done_before) < 120

    seen = []
    resumed = extract(tiny_teacher, docs, tmp_path / "resumed", s_small,
                      TaskState(lambda d, t, m: seen.append(d)))
    assert seen[0] == len(done_before)  # started where it stopped
    torch.testing.assert_close(resumed.pooled(), straight.pooled(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(resumed.stats()[0], straight.stats()[0], atol=1e-5, rtol=1e-5)


def test_cancel_takes_effect_within_a_block(tiny_teacher):
    state = TaskState()
    state.cancel()
    ids, mask = pad_batch(tiny_teacher.tokenize(["a b c"], 16), tiny_teacher.pad_id)
    with pytest.raises(Cancelled):
        capture(tiny_teacher, ids, mask, [HookPoint("resid_post", 3)], state)


def test_foreign_and_corrupt_caches_are_reported(tiny_teacher, tmp_path):
    docs = make_docs(10)
    s = ExtractSettings(hook="resid_post.1", batch_tokens=512)
    extract(tiny_teacher, docs, tmp_path / "c", s)
    # Same folder, other settings: refused, untouched.
    before = (tmp_path / "c" / "manifest.json").read_bytes()
    with pytest.raises(CacheError, match="different"):
        extract(tiny_teacher, docs, tmp_path / "c", ExtractSettings(hook="resid_post.2"))
    with pytest.raises(CacheError, match="different"):
        extract(tiny_teacher, make_docs(11), tmp_path / "c", s)
    assert (tmp_path / "c" / "manifest.json").read_bytes() == before
    # A non-empty folder that is not a cache is never written into.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="not empty"):
        extract(tiny_teacher, docs, tmp_path / "mine", s)
    # Corruptions.
    shard = next((tmp_path / "c").glob("shard-*.safetensors"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="wrong size"):
        ActivationCache(tmp_path / "c")
    shard.write_bytes(b"\xff" * len(data))
    with pytest.raises(CacheError, match="cannot be read"):
        ActivationCache(tmp_path / "c").pooled()
    (tmp_path / "c" / "manifest.json").write_text("{trunc")
    with pytest.raises(CacheError, match="corrupt"):
        ActivationCache(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(CacheError, match="not a distillscope"):
        ActivationCache(tmp_path / "c")
    with pytest.raises(CacheError, match="no manifest"):
        ActivationCache(tmp_path / "empty")


def test_bad_settings_and_empty_corpus(tiny_teacher, tmp_path):
    with pytest.raises(ValueError, match="Mode"):
        ExtractSettings(mode="mean").validate()
    with pytest.raises(ValueError, match="batch_tokens"):
        ExtractSettings(batch_tokens=0).validate()
    with pytest.raises(ValueError, match="layers 0 to 3"):
        extract(tiny_teacher, make_docs(2), tmp_path / "x", ExtractSettings(hook="resid_post.40"))
    with pytest.raises(CacheError, match="no documents"):
        extract(tiny_teacher, [], tmp_path / "x", ExtractSettings(hook="resid_post.1"))


def test_document_activations_marks_bos(tiny_teacher):
    out = document_activations(tiny_teacher, "love is kind", "resid_post.1")
    assert out.is_bos[0] and not any(out.is_bos[1:])
    assert out.acts.shape == (len(out.tokens), tiny_teacher.d_model)
    assert "".join(out.tokens[1:]) == "love is kind"


def test_quick_pass_is_close_to_float32_and_exact_on_request(tiny_teacher, monkeypatch):
    from core.models import cpu_has_amx

    text = " ".join(WORDS * 4)
    exact = document_activations(tiny_teacher, text, "resid_post.2", quick=False).acts
    quick = document_activations(tiny_teacher, text, "resid_post.2").acts
    rel = ((quick - exact).norm() / exact.norm()).item()
    assert rel < 0.02
    if cpu_has_amx():  # the fast path really ran in bfloat16
        assert rel > 0
    monkeypatch.setenv("DISTILLSCOPE_EXACT_INSPECT", "1")
    assert torch.equal(document_activations(tiny_teacher, text, "resid_post.2").acts, exact)
    # the autocast ends with the pass: a later plain capture is float32 again
    ids, mask = pad_batch(tiny_teacher.tokenize([text], 256), tiny_teacher.pad_id)
    assert torch.equal(capture(tiny_teacher, ids, mask, [HookPoint.parse("resid_post.2")])[
        HookPoint.parse("resid_post.2")][0], exact)


def test_fast_precision_has_its_own_cache_and_close_values(tiny_teacher, tmp_path):
    from core.inspect import auto_cache_folder
    from core.models import cpu_has_amx

    docs = make_docs(9)
    exact_s = ExtractSettings(hook="resid_post.2", mode="pooled", batch_tokens=256)
    fast_s = ExtractSettings(hook="resid_post.2", mode="pooled", batch_tokens=256, precision="fast")
    # exact leaves the key as it was before the field existed (old caches still match)
    assert "precision" not in exact_s.key() and fast_s.key()["precision"] == "fast:bfloat16-weights"
    assert auto_cache_folder(tiny_teacher, docs, exact_s) != auto_cache_folder(tiny_teacher, docs, fast_s)
    exact = extract(tiny_teacher, docs, tmp_path / "e", exact_s).pooled()
    fast = extract(tiny_teacher, docs, tmp_path / "f", fast_s).pooled()
    rel = ((fast - exact).norm() / exact.norm()).item()
    assert rel < 0.02 and (rel > 0) == cpu_has_amx()
    # the bfloat16 twin is the extraction's own: the teacher keeps its float32 weights
    assert all(p.dtype == torch.float32 for p in tiny_teacher.model.parameters())
    assert torch.equal(extract(tiny_teacher, docs, tmp_path / "e2", exact_s).pooled(), exact)
    with pytest.raises(CacheError, match="different"):  # one folder holds one precision
        extract(tiny_teacher, docs, tmp_path / "e", fast_s)
    with pytest.raises(ValueError, match="Precision 'half' is unknown"):
        ExtractSettings(precision="half").validate()


def test_extraction_runs_in_a_thread_and_cancels_fast(tiny_teacher, tmp_path):
    import time
    docs = make_docs(3000, seed=4)
    state = TaskState()
    errors = []
    t = threading.Thread(target=lambda: _run_catch(errors, tiny_teacher, docs, tmp_path / "t", state))
    t.start()
    time.sleep(0.3)
    start = time.monotonic()
    state.cancel()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - start < 1.0
    assert errors and isinstance(errors[0], Cancelled)


def _run_catch(errors, teacher, docs, folder, state):
    try:
        extract(teacher, docs, folder, ExtractSettings(hook="resid_post.3", batch_tokens=256), state)
    except Exception as exc:  # noqa: BLE001
        errors.append(exc)


def test_time_based_flush_gives_same_vectors(tiny_teacher, tmp_path):
    docs = make_docs(30, seed=5)
    one = extract(tiny_teacher, docs, tmp_path / "one", ExtractSettings(hook="resid_post.1"))
    many = extract(tiny_teacher, docs, tmp_path / "many",
                   ExtractSettings(hook="resid_post.1", batch_tokens=32, flush_seconds=0))
    assert len(one.manifest["shards"]) == 1 and len(many.manifest["shards"]) > 5
    torch.testing.assert_close(one.pooled(), many.pooled())
    torch.testing.assert_close(one.stats()[1], many.stats()[1], atol=1e-4, rtol=1e-4)


KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from core.activations import ExtractSettings, extract
from core.models import load_teacher
from tests.test_activations import make_docs
teacher = load_teacher(sys.argv[1], device="cpu")
extract(teacher, make_docs(600, seed=6), sys.argv[2],
        ExtractSettings(hook="resid_post.3", mode="tokens", batch_tokens=32, flush_seconds=0))
"""


def test_sigkill_leaves_a_resumable_cache(tiny_model_dir, tiny_teacher, tmp_path):
    """Kill an extraction at a random moment: the folder is never corrupt and resumes to the
    same result as a straight run."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tiny_model_dir), str(folder)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = folder / "manifest.json"
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.02)
    time.sleep(random.uniform(0, 0.3))
    assert proc.poll() is None, "the extraction ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settings = ExtractSettings(hook="resid_post.3", mode="tokens", batch_tokens=32, flush_seconds=0)
    partial = ActivationCache(folder, require_complete=False)  # readable, not corrupt
    assert partial.shard_header_ok()
    docs = make_docs(600, seed=6)
    resumed = extract(tiny_teacher, docs, folder, settings)
    straight = extract(tiny_teacher, docs, tmp_path / "straight", settings)
    assert resumed.manifest["n_rows"] == straight.manifest["n_rows"]
    torch.testing.assert_close(resumed.stats()[0], straight.stats()[0], atol=1e-4, rtol=1e-4)
    assert not list(folder.glob(".*tmp*"))
