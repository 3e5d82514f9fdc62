"""End-to-end on the real bundled Gemma 3 270M: loading, hooks, extraction, neighbours."""

import pytest
import torch

from core.activations import ExtractSettings, extract
from core.documents import load_demo
from core.inspect import corpus_vectors, token_norms
from core.models import HookPoint, capture

pytestmark = pytest.mark.teacher


def test_bundled_teacher_shape_and_hook(bundled_teacher):
    t = bundled_teacher
    assert (t.n_layers, t.d_model, t.d_mlp) == (18, 640, 2048)
    from core.activations import pad_batch
    ids, mask = pad_batch(t.tokenize(["The cat sat on the mat.", "Hi"], 32), t.pad_id)
    assert ids[0, 0] == t.bos_id
    with torch.no_grad():
        full = t.model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    got = capture(t, ids, mask, [HookPoint("resid_post", 6)])[HookPoint("resid_post", 6)]
    torch.testing.assert_close(got, full.hidden_states[7])


def test_demo_neighbours_share_labels(bundled_teacher):
    """Ground truth: z-normalized pooled layer-6 vectors put same-topic texts together.

    With 8 balanced labels chance is 12.5%; leave-one-out nearest-neighbour label agreement
    must be well above it (measured about 0.4-0.5)."""
    docs = load_demo().documents
    cv = corpus_vectors(bundled_teacher, docs, layer=6, max_length=128)
    labels = [d.label for d in docs]
    hits = sum(labels[cv.neighbours(i, 1)[0][0]] == labels[i] for i in range(len(docs)))
    accuracy = hits / len(docs)
    print(f"leave-one-out 1-NN label agreement: {accuracy:.3f} over {len(docs)} documents")
    assert accuracy > 0.25


def test_token_view_bos_dominates(bundled_teacher):
    view = token_norms(bundled_teacher, "Science is organised knowledge.", layer=6)
    assert view.is_bos[0] and view.tokens[0] == "<bos>"
    assert view.values[0] > 5 * max(view.values[1:])  # NOTES: the BOS norm dwarfs the rest


def test_token_cache_resumes_on_real_model(bundled_teacher, tmp_path):
    docs = load_demo().documents[:40]
    s = ExtractSettings(hook="mlp_out.3", mode="tokens", max_length=64, shard_mb=1)
    cache = extract(bundled_teacher, docs, tmp_path / "c", s)
    assert cache.manifest["n_rows"] == cache.manifest["n_tokens"] > 40
    mean, std = cache.stats()
    assert mean.shape == (640,) and bool((std > 0).all())
