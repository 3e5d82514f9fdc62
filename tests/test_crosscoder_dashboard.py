"""A crosscoder latent's dashboard (core/crosscoder/dashboard.py) on tiny model pairs: the encoded
corpus holds exactly the crosscoder's activations of the captured paired residuals (BOS and padding
left out), contexts are the top tokens with the right windows and per-token activations, the
statistics and logit effects match hand computations, a zero decoder gets a note, cancel works."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from core.activations import pad_batch
from core.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderError, latent_scaling
from core.crosscoder.dashboard import (CorpusLatents, encode_corpus, latent_dashboard,
                                       paired_token_batches)
from core.errors import Cancelled
from core.models import HookPoint, capture
from core.progress import TaskState

torch.set_num_threads(1)

TEXTS = ["the quick brown fox jumps over the lazy dog.", "a stitch in time saves nine.",
         "all that glitters is not gold.", "love is patient, love is kind.", "eat your vegetables.", ""]
HOOK = "resid_post.2"


@pytest.fixture(scope="module")
def variant(tiny_teacher):
    model = copy.deepcopy(tiny_teacher.model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.model.layers[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return dataclasses.replace(tiny_teacher, model=model, name="tiny-variant", fingerprint="perturbed")


def residuals(teacher, texts):
    ids, mask = pad_batch(teacher.tokenize(texts, 64), teacher.pad_id)
    point = HookPoint.parse(HOOK)
    return capture(teacher, ids, mask, [point])[point].float(), ids, mask


@pytest.fixture(scope="module")
def crosscoder(tiny_teacher, variant):
    """An untrained L1 crosscoder made sparse by a negative encoder bias, its scales set from the
    pair; latent 5's base decoder zeroed (variant-only), latent 6's variant decoder zeroed."""
    cc = Crosscoder(CrosscoderConfig(d_in=32, d_latent=24, architecture="l1", hook=HOOK), seed=3)
    xb, _, mask = residuals(tiny_teacher, TEXTS)
    xv, _, _ = residuals(variant, TEXTS)
    x = torch.stack([xb, xv], dim=-2)[mask.bool()]
    cc.set_input_scales(x)
    with torch.no_grad():
        cc.W_enc.mul_(10.0)  # unit-norm encoder columns: pre-activations of order 1
        cc.b_enc.fill_(-0.6)
        cc.W_dec[5, 0] = 0.0
        cc.W_dec[6, 1] = 0.0
    return cc.eval()


def by_hand(cc, tiny_teacher, variant):
    """f [B, T, F] of the paired residuals, zero on BOS and padding, and the token lists."""
    xb, ids, mask = residuals(tiny_teacher, TEXTS)
    xv, _, _ = residuals(variant, TEXTS)
    with torch.no_grad():
        f = cc.encode(torch.stack([xb, xv], dim=-2))
    keep = mask.bool().clone()
    keep[:, 0] = False
    return f * keep[..., None], tiny_teacher.tokenize(TEXTS, 64)


def test_encoded_corpus_holds_the_crosscoders_activations(crosscoder, tiny_teacher, variant):
    corpus = encode_corpus(crosscoder, [tiny_teacher, variant], TEXTS, doc_ids=[f"d{i}" for i in range(6)],
                           batch_size=4)
    f, lists = by_hand(crosscoder, tiny_teacher, variant)
    assert isinstance(corpus, CorpusLatents) and corpus.token_ids == lists and corpus.n_documents == 6
    assert corpus.n_tokens == sum(len(t) - 1 for t in lists)  # all but BOS; the empty text holds only BOS
    assert 0 < corpus.values.size < corpus.n_tokens * crosscoder.d_latent  # sparse, not empty
    for j in range(crosscoder.d_latent):
        for d, toks in enumerate(lists):
            want = f[d, :len(toks), j].numpy()
            assert np.allclose(corpus.document_activations(j, d), want, atol=1e-5), (j, d)
    freq = (f > 0).sum((0, 1)).double() / corpus.n_tokens
    assert np.allclose(corpus.frequency(), freq.numpy())
    assert corpus.hook == HOOK


def test_dashboard_contexts_statistics_and_effects(crosscoder, tiny_teacher, variant):
    corpus = encode_corpus(crosscoder, [tiny_teacher, variant], TEXTS)
    f, lists = by_hand(crosscoder, tiny_teacher, variant)
    j = int(torch.argmax((f > 0).sum((0, 1))))  # the busiest latent: many contexts
    dash = latent_dashboard(crosscoder, j, [tiny_teacher, variant], corpus, n_contexts=5, width=3)
    col = f[..., j]
    active = col[col > 0]
    assert dash.count == active.numel() and dash.n_tokens == corpus.n_tokens
    assert dash.frequency == pytest.approx(active.numel() / corpus.n_tokens)
    assert dash.max == pytest.approx(float(active.max()), rel=1e-5)
    assert dash.mean_active == pytest.approx(float(active.mean()), rel=1e-4)
    assert dash.mean_activation == pytest.approx(float(active.sum()) / corpus.n_tokens, rel=1e-4)
    assert sum(dash.hist_counts) == dash.count and len(dash.hist_edges) == len(dash.hist_counts) + 1
    # The top five tokens, largest first, each centred in a window of its own document.
    top = torch.sort(col.flatten(), descending=True).values[:5]
    assert [c.value for c in dash.contexts] == pytest.approx(top.tolist(), rel=1e-5)
    for c in dash.contexts:
        toks = lists[c.doc_index]
        lo = max(1, c.position - 3)
        assert c.token_ids == toks[lo:min(len(toks), c.position + 4)]
        assert c.acts == pytest.approx(col[c.doc_index, lo:lo + len(c.token_ids)].tolist(), abs=1e-5)
        assert c.center == c.position - lo and c.acts[c.center] == pytest.approx(c.value)
        assert c.tokens == tiny_teacher.token_strings(c.token_ids) and c.doc_id == str(c.doc_index)
    # Relative norm, cosine; logit effects: the decoder row through the final norm and the head.
    W = crosscoder.W_dec.detach()
    nb, nv = W[j, 0].norm(), W[j, 1].norm()
    assert dash.relative_norm == pytest.approx(float(nv / (nb + nv)), rel=1e-5)
    assert dash.cosine == pytest.approx(float(torch.cosine_similarity(W[j, 0], W[j, 1], dim=0)), abs=1e-5)
    for m, teacher in ((0, tiny_teacher), (1, variant)):
        with torch.no_grad():
            d = crosscoder.decoder_directions(m)[j]
            logits = teacher.model.lm_head(teacher.model.model.norm(d / d.norm())[None, None])[0, 0]
        top_ids = logits.topk(10).indices.tolist()
        e = dash.effects[crosscoder.model_names[m]]
        assert [t for t, _ in e["promoted"]] == teacher.token_strings(top_ids)
        assert [v for _, v in e["promoted"]] == pytest.approx(logits.topk(10).values.tolist(), rel=1e-4)
        assert [v for _, v in e["suppressed"]][0] == pytest.approx(float(logits.min()), rel=1e-4)
    assert dash.to_json()["contexts"][0]["value"] == dash.contexts[0].value


def test_a_zero_decoder_gets_a_note_and_classes_follow_the_decoders(crosscoder, tiny_teacher, variant):
    corpus = encode_corpus(crosscoder, [tiny_teacher, variant], TEXTS)
    dash = latent_dashboard(crosscoder, 5, [tiny_teacher, variant], corpus)
    assert dash.latent_class == "variant-only" and dash.relative_norm == pytest.approx(1.0)
    assert "writes nothing into base" in dash.effects["base"]["note"] and not dash.effects["base"]["promoted"]
    assert dash.effects["variant"]["promoted"] and not dash.effects["variant"]["note"]
    base_only = latent_dashboard(crosscoder, 6, [tiny_teacher, variant], texts=TEXTS)  # encodes the texts itself
    assert base_only.latent_class == "base-only" and base_only.effects["variant"]["note"]
    small = copy.deepcopy(crosscoder)
    with torch.no_grad():
        small.W_dec[7, 0] *= 0.05 * small.W_dec[7, 1].norm() / small.W_dec[7, 0].norm()
    dash = latent_dashboard(small, 7, [tiny_teacher, variant], corpus)
    assert dash.effects["base"]["promoted"] and "only 5% of the other's" in dash.effects["base"]["note"]
    freq = np.ones(crosscoder.d_latent)
    freq[5] = 0
    assert latent_dashboard(crosscoder, 5, [tiny_teacher, variant], corpus, frequency=freq).latent_class == "dead"
    for bad in (-1, 24, 2.5, True):
        with pytest.raises(CrosscoderError):
            latent_dashboard(crosscoder, bad, [tiny_teacher, variant], corpus)


def test_paired_batches_feed_latent_scaling_and_cancel_stops_encoding(crosscoder, tiny_teacher, variant):
    batches = list(paired_token_batches(crosscoder, [tiny_teacher, variant], TEXTS, batch_size=4))
    xb, _, mask = residuals(tiny_teacher, TEXTS)
    xv, _, _ = residuals(variant, TEXTS)
    keep = mask.bool().clone()
    keep[:, 0] = False
    want = torch.stack([xb, xv], dim=-2)[keep]
    assert torch.allclose(torch.cat(batches), want, atol=1e-5)
    a = latent_scaling(crosscoder, iter(batches), [5, 7])
    b = latent_scaling(crosscoder, want, [5, 7])
    assert torch.allclose(a.beta_error, b.beta_error, atol=1e-5, equal_nan=True)

    calls = []

    def progress(done, total, message):
        calls.append(message)
        if done == 1:
            state.cancel()

    state = TaskState(progress)
    with pytest.raises(Cancelled):
        encode_corpus(crosscoder, [tiny_teacher, variant], TEXTS, batch_size=2, state=state)
    assert calls and calls[0].startswith("Reading the corpus")
    wide = Crosscoder(CrosscoderConfig(d_in=16, d_latent=4, architecture="l1", hook=HOOK), seed=0)
    with pytest.raises(CrosscoderError, match="width 32"):
        encode_corpus(wide, [tiny_teacher, variant], TEXTS)
