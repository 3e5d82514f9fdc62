"""Per-document feature scores, feature dashboards from an activation cache, labels, search and
the `features` / `label` commands: hand computations, brute force over small caches, round trips."""

import json
import math

import pytest
import torch

from bench.feature_cache import write_token_cache
from core.activations import ActivationCache, ExtractSettings, document_activations, extract
from core.cli import main
from core.dictionaries import REGISTRY, SAEConfig, create
from core.documents import Document
from core.errors import Cancelled, DistillscopeError
from core.features import (FeatureIndex, FeatureScores, Labels, Reference, class_vector, compare,
                           document_scores, encode_tokens, index_for, label_all, load_labels,
                           load_reference, logit_effects, nearest_features, projection_scores,
                           reference_from_cache, save_reference, search_labels, search_token,
                           token_scores, unit_directions)
from core.features import index as index_module
from core.features.labels import auto_label, show_token
from core.features.sparse import SparseEncoder
from core.progress import TaskState

torch.set_num_threads(1)  # shared 2-core machine; also keeps float sums reproducible


def make_sae(architecture="standard", d_in=3, d_sae=3, hook="resid_post.2", seed=0, **kw):
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture=architecture, hook_name=hook, **kw)
    if architecture == "jumprelu":
        return REGISTRY["jumprelu"](cfg.validate(), seed=seed)
    return create(cfg, seed=seed)


# --------------------------------------------------------------------------------------------
# Scoring


def hand_sae():
    sae = make_sae()
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[3.0, 4.0, 0.0],  # norm 5 -> (0.6, 0.8, 0)
                                      [0.0, 0.0, -2.0],  # norm 2 -> (0, 0, -1)
                                      [1.0, 1.0, 1.0]]))  # norm sqrt 3
        sae.W_enc.copy_(torch.full((3, 3), 123.0))  # never used by projection
    return sae


def test_projection_matches_hand_computation():
    sae = hand_sae()
    mean, std = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([2.0, 1.0, 0.5])
    vector = torch.tensor([5.0, -1.0, 3.0])  # z = (2, -1, 2)
    scores = projection_scores(vector, sae, mean, std)
    # 0.6*2 + 0.8*(-1) = 0.4;  -1*2 = -2;  (2 - 1 + 2)/sqrt(3) = sqrt(3)
    assert scores.method == "projection" and scores.peak is None and scores.token_acts is None
    assert scores.values.tolist() == pytest.approx([0.4, -2.0, math.sqrt(3)], rel=1e-5)
    assert scores.top(3) == [1, 2, 0]  # by |score|: the negative one leads
    assert scores.top(2, by="value") == [2, 0]
    assert scores.top(10, by="value") == [2, 0, 1]
    with pytest.raises(ValueError):
        scores.top(1, by="peak")
    assert unit_directions(sae).norm(dim=1).tolist() == pytest.approx([1, 1, 1])
    # The encoder plays no part: changing it changes nothing.
    with torch.no_grad():
        sae.W_enc.mul_(-7)
    assert projection_scores(vector, sae, mean, std).values.tolist() == pytest.approx(scores.values.tolist())
    # A reference of the wrong width is a message, not a shape error.
    with pytest.raises(DistillscopeError, match="width"):
        projection_scores(vector, sae, torch.zeros(4), torch.ones(4))


def test_class_vector_and_compare():
    vectors = torch.tensor([[1.0, 0, 0], [3.0, 2, 0], [0, 0, 9.0]])
    assert class_vector(vectors, ["a", "a", "b"], "a").tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(DistillscopeError, match="labelled"):
        class_vector(vectors, ["a", "a", "b"], "c")
    a = FeatureScores("projection", torch.tensor([1.0, 5.0, -2.0, 0.0]))
    b = FeatureScores("projection", torch.tensor([1.5, 0.0, 2.0, 0.0]))
    assert compare(a, b, 2) == [(1, 5.0, 0.0), (2, -2.0, 2.0)]


def test_token_scores_ignore_bos():
    sae = make_sae(d_in=2, d_sae=2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    acts = torch.tensor([[100.0, 100.0], [1.0, 0.0], [3.0, -1.0]])  # row 0 is BOS
    scores = token_scores(sae, acts, [True, False, False])
    assert scores.method == "tokens"
    assert scores.values.tolist() == [2.0, 0.0]
    assert scores.peak.tolist() == [3.0, 0.0]
    assert scores.token_acts.tolist() == [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]
    assert scores.top(1, by="peak") == [0]
    # Without is_bos every row counts.
    assert token_scores(sae, acts).values.tolist() == pytest.approx([104 / 3, 100 / 3])
    # Nothing but BOS: zero, not NaN.
    assert token_scores(sae, acts[:1], [True]).values.tolist() == [0.0, 0.0]


class SquaredReLU(REGISTRY["standard"]):
    """An activation the fast encoder has no shortcut for: it must call this one."""

    def activation(self, pre):
        return torch.relu(pre) ** 2


@pytest.mark.parametrize("architecture", ["standard", "topk", "batchtopk", "jumprelu", "custom"])
def test_encoders_agree_with_sae_encode(architecture):
    if architecture == "custom":
        sae = SquaredReLU(SAEConfig(d_in=16, d_sae=40, architecture="standard"), seed=1)
    else:
        sae = make_sae(architecture, d_in=16, d_sae=40, k=5, seed=1)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.3)
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.4)
    sae.cfg.input_scale = 1.7
    sae.train()  # encode_tokens must still use inference mode (BatchTopK: the threshold)
    x = torch.randn(300, 16) * 2
    with torch.no_grad():
        sae.eval()
        expected = sae.encode(x)
        sae.train()
    got = encode_tokens(sae, x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert sae.training  # restored
    rows, feats, vals = SparseEncoder(sae, "float32")(x)
    dense = torch.zeros_like(expected)
    dense[rows, feats] = vals
    assert torch.allclose(dense, expected, atol=1e-5)
    assert bool((vals > 0).all())


def test_half_precision_dictionary_encodes_in_float32():
    sae = make_sae("topk", d_in=16, d_sae=32, k=4, dtype="float16")
    x = torch.randn(20, 16) * 300  # products overflow nothing in float32
    reference = make_sae("topk", d_in=16, d_sae=32, k=4)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(reference, name).copy_(getattr(sae, name).float())
        expected = reference.encode(x)
    assert torch.allclose(encode_tokens(sae, x), expected, rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------------------------
# A small synthetic token cache over several shards


D_IN, D_SAE = 16, 24


def synthetic_cache(folder, n_docs=30, seed=0, docs_per_shard=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n_docs,), generator=g)
    doc_index = torch.repeat_interleave(torch.arange(n_docs), lengths)
    position = torch.cat([torch.arange(1, n + 1) for n in lengths.tolist()])
    token_id = torch.randint(3, 40, (len(doc_index),), generator=g)
    acts = torch.randn(len(doc_index), D_IN, generator=g) + 0.3 * token_id[:, None].float().sin()
    return ActivationCache(write_token_cache(folder, acts, doc_index, position, token_id,
                                             hook="resid_post.2", docs_per_shard=docs_per_shard)), acts


def brute_force(sae, acts):
    with torch.no_grad():
        sae.eval()
        return sae.encode(acts)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 rows: many chunks per shard, so running maxima, histogram shifts and top-k
    merges all happen."""
    monkeypatch.setattr(index_module, "MIN_CHUNK_ROWS", 16)
    monkeypatch.setattr(index_module, "CHUNK_ENTRIES", 16)


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_index_matches_brute_force(tmp_path, small_chunks, architecture):
    cache, acts = synthetic_cache(tmp_path / "cache")
    sae = make_sae(architecture, d_in=D_IN, d_sae=D_SAE, k=3, seed=2)
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
        sae.b_enc[5] = -1e4  # a feature that never fires
    seen = []
    index = FeatureIndex.build(sae, cache, top_k=5, bins=8, precision="float32",
                               state=TaskState(lambda d, t, m: seen.append((d, t))))
    assert seen[-1] == (len(acts), len(acts))
    F_ND = brute_force(sae, acts)
    n = len(acts)
    assert index.n_tokens == n and len(cache.manifest["shards"]) > 1
    assert torch.equal(index.count, (F_ND > 0).sum(0))
    assert torch.allclose(index.frequency, (F_ND > 0).float().mean(0))
    assert torch.allclose(index.max, F_ND.amax(0))
    assert bool(index.dead()[5]) and index.histogram(5)[0].numel() == 0 and index.top_rows(5) == []
    step = 4.0 / 8
    for f in range(D_SAE):
        col = F_ND[:, f]
        fired = col > 0
        order = sorted(fired.nonzero().flatten().tolist(), key=lambda r: (-float(col[r]), r))[:5]
        assert [r for r, _ in index.top_rows(f)] == order
        assert [v for _, v in index.top_rows(f)] == pytest.approx([float(col[r]) for r in order], rel=1e-5)
        if fired.any():
            level = torch.floor(torch.log10(col[fired]) / step).long()
            top = int(level.max()) + 1
            expected = torch.bincount((level - (top - 8)).clamp(min=0), minlength=8)
            edges, counts = index.histogram(f)
            assert counts.tolist() == expected.tolist()
            assert int(counts.sum()) == int(fired.sum())
            assert edges[-2] <= float(col.max()) < edges[-1] * (1 + 1e-9)
            assert edges[0] == pytest.approx(edges[-1] / 10 ** 4)


def test_contexts_and_token_search_match_brute_force(tmp_path):
    cache, acts = synthetic_cache(tmp_path / "cache")
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=3)
    index = FeatureIndex.build(sae, cache, top_k=4, precision="float32")
    F_ND = brute_force(sae, acts)
    shards = list(cache.shards())
    doc = torch.cat([s["doc_index"] for s in shards])
    pos = torch.cat([s["position"] for s in shards])
    tok = torch.cat([s["token_id"] for s in shards])
    f = int(F_ND.gt(0).sum(0).argmax())
    contexts = index.contexts(f, width=3)
    assert len(contexts) == 4 and len(index.contexts(f, width=3, n=2)) == 2
    for ctx, (row, value) in zip(contexts, index.top_rows(f)):
        rows = [r for r in range(row - 3, row + 4) if 0 <= r < len(doc) and doc[r] == doc[row]]
        assert ctx.doc_index == int(doc[row]) and ctx.doc_id == f"doc-{int(doc[row])}"
        assert ctx.position == int(pos[row])
        assert ctx.token_ids == [int(tok[r]) for r in rows]
        assert ctx.token_ids[ctx.center] == int(tok[row])
        assert ctx.acts == pytest.approx([float(F_ND[r, f]) for r in rows], abs=1e-5)
        assert ctx.value == pytest.approx(value, abs=1e-5) and ctx.value == ctx.acts[ctx.center]
    # Search by token: sqrt(fire rate on the token's occurrences x share of the feature's
    # whole activation that is on them), by hand from the dense activations.
    t = int(tok[0])
    mask = tok == t
    on_token = F_ND[mask]
    mean, fire_rate = on_token.mean(0), (on_token > 0).float().mean(0)
    share = (on_token.sum(0) / F_ND.sum(0).clamp(min=1e-12)).clamp(max=1)
    score = (fire_rate * share).sqrt()
    expected = [int(i) for i in torch.sort(-score, stable=True).indices if mean[i] > 0][:5]
    got = index.features_for_token(t, n=5)
    assert [g.feature for g in got] == expected
    assert [g.score for g in got] == pytest.approx([float(score[i]) for i in expected], rel=1e-4)
    assert [g.mean for g in got] == pytest.approx([float(mean[i]) for i in expected], rel=1e-5)
    assert all(0 < g.fire_rate <= 1 and 0 < g.share <= 1 for g in got)
    assert index.token_occurrences(t) == int(mask.sum())
    assert index.features_for_token(99999) == []


def test_bfloat16_index_is_close_to_exact(tmp_path):
    cache, _ = synthetic_cache(tmp_path / "cache", n_docs=60)
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=4)
    exact = FeatureIndex.build(sae, cache, precision="float32")
    fast = FeatureIndex.build(sae, cache, precision="bfloat16")
    assert float((exact.frequency - fast.frequency).abs().max()) < 0.02
    assert torch.allclose(exact.max, fast.max, rtol=0.02)


def test_index_save_load_and_index_for(tmp_path, monkeypatch):
    from core import paths

    cache, _ = synthetic_cache(tmp_path / "cache")
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=5)
    index = FeatureIndex.build(sae, cache, precision="float32")
    index.save(tmp_path / "idx")
    loaded = FeatureIndex.load(tmp_path / "idx")
    assert loaded.meta == index.meta
    for key, value in index.t.items():
        assert torch.equal(loaded.t[key], value), key
    with pytest.raises(DistillscopeError, match="attach"):
        loaded.contexts(0)
    loaded.attach(sae, cache)
    assert loaded.contexts(1) == index.contexts(1)
    # A damaged index is refused, not half-read.
    (tmp_path / "idx" / "index.safetensors").write_bytes(b"garbage")
    with pytest.raises(DistillscopeError, match="damaged"):
        FeatureIndex.load(tmp_path / "idx")
    # index_for builds once, then loads from the user cache dir.
    first = index_for(sae, cache, precision="float32")
    stored = list((paths.cache_dir() / "feature-index").iterdir())
    assert len(stored) == 1
    with monkeypatch.context() as m:
        m.setattr(FeatureIndex, "build", classmethod(lambda *a, **k: pytest.fail("rebuilt")))
        second = index_for(sae, cache, precision="float32")
    assert torch.equal(second.t["top_rows"], first.t["top_rows"]) and second.sae is sae
    # Another dictionary gets its own index.
    with torch.no_grad():
        sae.W_enc[0, 0] += 1
    index_for(sae, cache, precision="float32")
    assert len(list(stored[0].parent.iterdir())) == 2


def test_an_index_is_rebuilt_when_its_cache_is_extracted_again_in_other_shards(tmp_path):
    import shutil

    from core import paths

    cache, acts = synthetic_cache(tmp_path / "cache")
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=5)
    index_for(sae, cache, precision="float32")
    [stored] = list((paths.cache_dir() / "feature-index").iterdir())
    # The same rows again, cut into shards of another size (extraction flushes by time too).
    shutil.rmtree(tmp_path / "cache")
    again, _ = synthetic_cache(tmp_path / "cache", docs_per_shard=11)
    assert again.manifest["key"] == cache.manifest["key"] and again.manifest["shards"] != cache.manifest["shards"]
    with pytest.raises(DistillscopeError, match="extracted again"):
        FeatureIndex.load(stored, sae, again)
    index = index_for(sae, again, precision="float32")
    codes = brute_force(sae, acts)
    for f in range(D_SAE):  # every context's activations are its rows', read from the new shards
        for c in index.contexts(f, width=3):
            rows = (index.t["row_doc"] == c.doc_index).nonzero().flatten()
            row = int(rows[0]) + c.position - 1
            assert c.value == pytest.approx(float(codes[row, f]), abs=1e-5)


def test_index_build_cancels_and_checks_its_inputs(tmp_path):
    cache, _ = synthetic_cache(tmp_path / "cache")
    state = TaskState()
    state.cancel()
    with pytest.raises(Cancelled):
        FeatureIndex.build(make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3), cache, state=state)
    with pytest.raises(DistillscopeError, match="width"):
        FeatureIndex.build(make_sae("topk", d_in=8, d_sae=D_SAE, k=3), cache)
    with pytest.raises(DistillscopeError, match="resid_post.2"):
        FeatureIndex.build(make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, hook="resid_post.5"), cache)


# --------------------------------------------------------------------------------------------
# Labels and search


def test_a_punctuation_feature_is_labelled_with_the_tokens_before_it(tmp_path):
    from core.features.labels import previous_rows

    cache, _ = synthetic_cache(tmp_path / "cache")
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=6)
    index = FeatureIndex.build(sae, cache, top_k=6, precision="float32")
    f = next(f for f in range(D_SAE) if index.top_rows(f))
    rows = [r for r, _ in index.top_rows(f)]
    row_doc = index.t["row_doc"]
    before = previous_rows(index, rows)
    assert all(p == -1 if r == 0 or int(row_doc[r - 1]) != int(row_doc[r]) else p == r - 1
               for r, p in zip(rows, before))
    prior = {int(index.token_id(p)) for p in before if p >= 0}
    assert prior  # the synthetic documents are long enough to have tokens before the top rows
    top_ids = {index.token_id(r) for r in rows}

    def names(ids):  # the feature's own tokens are all '.', the ones before them words
        return ["." if i in top_ids else f" w{i}" for i in ids]

    label = auto_label(index, f, names)
    assert label.startswith("'.' after ' w")
    # A token label with letters needs no context.
    assert " after " not in auto_label(index, f, lambda ids: [f" w{i}" for i in ids])


def test_labels_round_trip_user_edits_survive_relabelling(tmp_path):
    cache, acts = synthetic_cache(tmp_path / "cache")
    sae = make_sae("topk", d_in=D_IN, d_sae=D_SAE, k=3, seed=6)
    with torch.no_grad():
        sae.b_enc[7] = -1e4  # dead
    index = FeatureIndex.build(sae, cache, top_k=6, precision="float32")
    names = lambda ids: [f" w{i}" for i in ids]  # noqa: E731
    labels = label_all(index, sae, names, Labels())
    assert 7 not in labels and labels.get(7) == ""
    f = 0 if 0 in labels else next(iter(labels))
    # The label is built from the feature's top activating tokens, strongest first.
    weights = {}
    for row, value in index.top_rows(f):
        weights[f" w{index.token_id(row)}"] = weights.get(f" w{index.token_id(row)}", 0) + value
    leader = max(weights, key=weights.get)
    assert labels.get(f).startswith(show_token(leader)) and labels.is_auto(f)
    assert auto_label(index, 7, names) == ""
    labels.set(f, "Things about W")
    labels.set(1, "")  # a deliberate "no label"
    labels.save(tmp_path)
    again = load_labels(tmp_path)
    assert again.get(f) == "Things about W" and not again.is_auto(f) and 1 in again
    label_all(index, sae, names, again)
    assert again.get(f) == "Things about W" and again.get(1) == ""
    data = json.loads((tmp_path / "labels.json").read_text())
    assert data["format"] == 1 and data["labels"][str(f)] == {"text": "Things about W", "auto": False}
    again.reset(f)
    label_all(index, sae, names, again)
    assert again.is_auto(f)
    assert search_labels(again, "W" + leader.strip()[1:]) != [] and search_labels(again, "") == []
    assert search_labels(labels, "things ABOUT") == [f]
    # Damaged files are messages.
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(DistillscopeError, match="JSON"):
        load_labels(tmp_path)
    (tmp_path / "labels.json").write_text(json.dumps({"format": 1, "labels": {"x": {"text": 1}}}))
    with pytest.raises(DistillscopeError, match="malformed"):
        load_labels(tmp_path)
    assert len(load_labels(tmp_path / "nowhere")) == 0


def test_show_token_makes_whitespace_visible():
    assert show_token(" because") == "' because'"
    assert show_token("\n") == "'\\n'"
    assert show_token("'s") == '"\'s"'


# --------------------------------------------------------------------------------------------
# On a tiny teacher: documents, references, logit effects, search by token, CLI


@pytest.fixture(scope="module")
def tiny_docs():
    words = "the quick brown fox jumps over lazy dog love is kind science organised knowledge".split()
    g = torch.Generator().manual_seed(0)
    docs = []
    for i in range(12):
        n = int(torch.randint(4, 30, (1,), generator=g))
        text = " ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g))
        docs.append(Document(f"d{i}", text, "test", f"c{i % 2}"))
    return docs


def tiny_sae(teacher, seed=0):
    return make_sae("topk", d_in=teacher.d_model, d_sae=48, k=4, hook="resid_post.2", seed=seed)


def test_document_scores_on_tiny_teacher(tiny_teacher, tiny_docs):
    sae = tiny_sae(tiny_teacher)
    text = tiny_docs[0].text
    ref = Reference(torch.randn(tiny_teacher.d_model), torch.rand(tiny_teacher.d_model) + 0.5, "test")
    doc, scores = document_scores(tiny_teacher, sae, text, ref, "projection")
    direct = document_activations(tiny_teacher, text, "resid_post.2")
    keep = ~torch.tensor(direct.is_bos)
    assert doc.is_bos[0] and not any(doc.is_bos[1:])
    expected = projection_scores(direct.acts[keep].mean(0), sae, ref.mean, ref.std)
    assert torch.allclose(scores.values, expected.values, atol=1e-5)
    _, tokens = document_scores(tiny_teacher, sae, text, None, "tokens")
    assert torch.allclose(tokens.values, token_scores(sae, direct.acts, direct.is_bos).values, atol=1e-6)
    assert tokens.token_acts.shape == (len(direct.token_ids), 48) and float(tokens.token_acts[0].abs().sum()) == 0
    with pytest.raises(DistillscopeError, match="reference"):
        document_scores(tiny_teacher, sae, text, None, "projection")
    with pytest.raises(DistillscopeError, match="hook_name"):
        document_scores(tiny_teacher, make_sae("topk", d_in=32, d_sae=8, k=2, hook=""), text, ref, "tokens")
    with pytest.raises(DistillscopeError, match="no layer 9"):
        document_scores(tiny_teacher, make_sae("topk", d_in=32, d_sae=8, k=2, hook="resid_post.9"),
                        text, ref, "tokens")


def test_reference_same_from_token_and_pooled_caches(tiny_teacher, tiny_docs, tmp_path):
    s = dict(hook="resid_post.2", max_length=64)
    pooled = extract(tiny_teacher, tiny_docs, tmp_path / "p", ExtractSettings(mode="pooled", **s))
    tokens = extract(tiny_teacher, tiny_docs, tmp_path / "t", ExtractSettings(mode="tokens", **s))
    a, b = reference_from_cache(pooled), reference_from_cache(tokens)
    assert torch.allclose(a.mean, b.mean, atol=1e-4) and torch.allclose(a.std, b.std, atol=1e-4)
    assert a.count == b.count == len(tiny_docs) and b.hook == "resid_post.2"
    save_reference(tmp_path, b)
    back = load_reference(tmp_path)
    assert torch.equal(back.mean, b.mean) and torch.equal(back.std, b.std)
    assert (back.source, back.hook, back.count) == (b.source, b.hook, b.count)
    assert load_reference(tmp_path / "p") is None
    (tmp_path / "reference.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(DistillscopeError, match="cannot be read"):
        load_reference(tmp_path)


def test_logit_effects_equal_direct_computation(tiny_teacher):
    sae = tiny_sae(tiny_teacher, seed=1)
    model = tiny_teacher.model
    f = 7
    up, down = logit_effects(tiny_teacher, sae, f, n=5)
    with torch.no_grad():
        d = sae.W_dec[f] / sae.W_dec[f].norm()
        logits = model.model.norm(d[None, None]) @ model.lm_head.weight.T
        logits = logits[0, 0]
    ids = logits.topk(5).indices.tolist()
    low = (-logits).topk(5).indices.tolist()
    assert up == [(tiny_teacher.tokenizer.decode([i]), pytest.approx(float(logits[i]), abs=1e-5)) for i in ids]
    assert down == [(tiny_teacher.tokenizer.decode([i]), pytest.approx(float(logits[i]), abs=1e-5)) for i in low]
    assert up[0][1] >= up[-1][1] and down[0][1] <= down[-1][1]


def test_nearest_features_by_decoder_cosine():
    sae = make_sae(d_in=2, d_sae=4)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 3.0], [-1.0, 0.0]]))
    got = nearest_features(sae, 0, n=3)
    assert [f for f, _ in got] == [1, 2, 3]
    assert got[0][1] == pytest.approx(2 / math.hypot(2, 0.1)) and got[2][1] == pytest.approx(-1.0)
    with pytest.raises(IndexError):
        nearest_features(sae, 4)


def test_search_token_on_tiny_teacher(tiny_teacher, tiny_docs, tmp_path):
    cache = extract(tiny_teacher, tiny_docs, tmp_path / "t",
                    ExtractSettings(hook="resid_post.2", mode="tokens", max_length=64))
    sae = tiny_sae(tiny_teacher, seed=2)
    index = index_for(sae, cache, precision="float32")
    token = tiny_teacher.tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    assert index.token_occurrences(token) > 0
    assert search_token(index, tiny_teacher, " the", n=4) == index.features_for_token(token, n=4)
    assert search_token(index, tiny_teacher.tokenizer, " the") == index.features_for_token(token)
    with pytest.raises(DistillscopeError, match="no token"):
        search_token(index, tiny_teacher, "")


def test_index_leaves_bos_rows_out(tiny_teacher, tiny_docs, tmp_path):
    settings = ExtractSettings(hook="resid_post.2", mode="tokens", max_length=64, include_bos=True)
    cache = extract(tiny_teacher, tiny_docs, tmp_path / "b", settings)
    sae = tiny_sae(tiny_teacher, seed=4)
    index = FeatureIndex.build(sae, cache, precision="float32")
    tok = torch.cat([s["token_id"] for s in cache.shards()])
    acts = torch.cat([s["acts"] for s in cache.shards()])
    bos = tok == tiny_teacher.bos_id
    assert int(bos.sum()) == len(tiny_docs) and index.n_rows == len(tok)
    assert index.n_tokens == len(tok) - len(tiny_docs)
    F_ND = brute_force(sae, acts[~bos])
    assert torch.equal(index.count, (F_ND > 0).sum(0))
    assert all(not bool(bos[r]) for f in range(48) for r, _ in index.top_rows(f))


def test_cli_label_then_features_json(tiny_model_dir, tiny_docs, tmp_path, capsys):
    from core.models import load_teacher

    teacher = load_teacher(tiny_model_dir, device="cpu")
    folder = tmp_path / "sae"
    tiny_sae(teacher, seed=3).save(folder)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": d.id, "text": d.text}) for d in tiny_docs))
    doc = tmp_path / "doc.txt"
    doc.write_text("the quick brown fox is kind")

    # No reference yet: projection says what to do.
    rc = main(["features", str(doc), "--dictionary", str(folder), "--model", str(tiny_model_dir), "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "reference.safetensors" in err and "distillscope label" in err and "Traceback" not in err
    # Token scores need no reference.
    rc = main(["features", str(doc), "--dictionary", str(folder), "--model", str(tiny_model_dir),
               "--method", "tokens", "--top", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["method"] == "tokens" and len(out["documents"][0]["features"]) == 3
    assert all("peak" in row for row in out["documents"][0]["features"])

    rc = main(["label", str(folder), "--corpus", str(corpus), "--model", str(tiny_model_dir)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (folder / "labels.json").is_file() and (folder / "reference.safetensors").is_file()
    labels = load_labels(folder)
    assert len(labels) > 0
    rc = main(["features", str(doc), "--dictionary", str(folder), "--model", str(tiny_model_dir),
               "--top", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    rows = out["documents"][0]["features"]
    assert out["method"] == "projection" and out["hook"] == "resid_post.2" and len(rows) == 5
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["label"] == labels.get(r["feature"]) for r in rows)
    assert any(r["label"] for r in rows)
    scores = [abs(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # The numbers are those of the API.
    from core.dictionaries import load
    _, api = document_scores(teacher, load(folder), doc.read_text(), load_reference(folder), "projection")
    assert [r["feature"] for r in rows] == api.top(5)
    assert [r["score"] for r in rows] == pytest.approx([float(api.values[f]) for f in api.top(5)], abs=1e-5)
    # The table for people.
    rc = main(["features", str(doc), "--dictionary", str(folder), "--model", str(tiny_model_dir), "--top", "2"])
    text = capsys.readouterr().out
    assert rc == 0 and "rank" in text and "label" in text and str(rows[0]["feature"]) in text
    # A user's label survives labelling again.
    labels.set(rows[0]["feature"], "my label")
    labels.save(folder)
    assert main(["label", str(folder), "--corpus", str(corpus), "--model", str(tiny_model_dir)]) == 0
    assert load_labels(folder).get(rows[0]["feature"]) == "my label"
    capsys.readouterr()


def test_cli_features_errors_are_messages(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import core.features as features

    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    monkeypatch.setattr(features, "STARTER_DICTIONARY", tmp_path / "missing-starter")
    rc = main(["features", str(doc), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "starter dictionary" in err and "--dictionary" in err
    rc = main(["features", str(doc), "--dictionary", str(tmp_path), "--model", str(tiny_model_dir)])
    assert rc == 2 and "cfg.json" in capsys.readouterr().err
    folder = tmp_path / "wide"
    make_sae("topk", d_in=64, d_sae=8, k=2).save(folder)
    rc = main(["features", str(doc), "--dictionary", str(folder), "--model", str(tiny_model_dir),
               "--method", "tokens"])
    err = capsys.readouterr().err
    assert rc == 2 and "64-wide" in err and "Traceback" not in err
