"""Training batches streamed from the teacher: the rows an extraction stores, reproducibly shuffled."""

import pytest
import torch

import core.dictionaries.streaming as streaming
from core.activations import ExtractSettings, extract
from core.dictionaries.streaming import teacher_batches
from core.documents import Document
from core.errors import Cancelled, DocumentError
from core.progress import TaskState

HOOK = "resid_post.2"


def make_docs(n=40, seed=0):
    words = "the quick brown fox jumps over lazy dog love is kind science knowledge".split()
    g = torch.Generator().manual_seed(seed)
    docs = []
    for i in range(n):
        idx = torch.randint(0, len(words), (int(torch.randint(3, 30, (1,), generator=g)),), generator=g)
        docs.append(Document(id=f"d{i}", text=" ".join(words[j] for j in idx), source="test"))
    return docs


DOCS = make_docs()


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows in a canonical order (by a random projection), to compare multisets of rows."""
    key = x @ torch.randn(x.shape[1], generator=torch.Generator().manual_seed(1))
    return x[key.argsort()]


@pytest.mark.parametrize("include_bos", [False, True])
def test_rows_are_what_extraction_stores(tiny_teacher, tmp_path, include_bos):
    cache = extract(tiny_teacher, DOCS, tmp_path / "c", ExtractSettings(
        hook=HOOK, mode="tokens", max_length=24, include_bos=include_bos, batch_tokens=300))
    stored = torch.cat([s["acts"].float() for s in cache.shards()])
    streamed = torch.cat(list(teacher_batches(tiny_teacher, DOCS, HOOK, 37, max_length=24,
                                              buffer_tokens=100, include_bos=include_bos)))
    assert streamed.dtype == torch.float32 and streamed.shape == stored.shape
    assert streamed.shape[0] == cache.manifest["n_rows"]
    torch.testing.assert_close(sorted_rows(streamed), sorted_rows(stored), rtol=1e-4, atol=1e-5)


def test_batches_shapes_epochs_and_shuffling(tiny_teacher):
    d = tiny_teacher.d_model
    one = list(teacher_batches(tiny_teacher, DOCS, HOOK, 64, buffer_tokens=150))
    n = sum(len(b) for b in one)
    assert all(b.shape == (64, d) for b in one[:-1]) and 0 < len(one[-1]) <= 64
    two = list(teacher_batches(tiny_teacher, DOCS, HOOK, 64, buffer_tokens=150, epochs=2))
    assert sum(len(b) for b in two) == 2 * n
    rows = torch.cat(two)
    # Every row exactly twice (not epoch by epoch: leftovers of the first carry into the second).
    torch.testing.assert_close(sorted_rows(rows), sorted_rows(torch.cat(one + one)))
    # The second epoch is a different order (leftovers of the first carry into it).
    assert not torch.allclose(rows[:n], rows[n:])
    dropped = list(teacher_batches(tiny_teacher, DOCS, HOOK, 64, buffer_tokens=150, drop_last=True))
    assert all(len(b) == 64 for b in dropped) and len(dropped) == n // 64


def test_same_seed_same_batches(tiny_teacher):
    def run(seed):
        return torch.cat(list(teacher_batches(tiny_teacher, DOCS, HOOK, 50, seed=seed,
                                              buffer_tokens=120, epochs=2)))
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.testing.assert_close(sorted_rows(a), sorted_rows(c))


@pytest.mark.parametrize("skip", [1, 2, 5, 9, 13, 20])
def test_skip_batches_equals_dropping_them_and_spares_the_teacher(tiny_teacher, monkeypatch, skip):
    kwargs = dict(batch_size=160, buffer_tokens=400, epochs=2, seed=7)
    full = list(teacher_batches(tiny_teacher, DOCS, HOOK, **kwargs))
    assert 10 < len(full) < 20  # the cases above skip: within the first buffer, whole buffers, all
    ran = []
    real_capture = streaming.capture

    def counting(teacher, ids, mask, hooks, state=None, **kw):
        ran.append(int(mask.sum()))
        return real_capture(teacher, ids, mask, hooks, state, **kw)

    monkeypatch.setattr(streaming, "capture", counting)
    rest = list(teacher_batches(tiny_teacher, DOCS, HOOK, skip_batches=skip, **kwargs))
    assert len(rest) == max(len(full) - skip, 0)
    for got, want in zip(rest, full[skip:]):
        # Carried rows of skipped buffers come from a differently padded pass: equal within rounding.
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    all_tokens = 2 * sum(len(t) for t in tiny_teacher.tokenize([d.text for d in DOCS], 256))
    if skip >= 5:  # whole buffers were skipped without running the teacher
        assert sum(ran) < all_tokens
    if skip >= len(full):
        assert sum(ran) == 0


def test_cancel_and_errors(tiny_teacher):
    state = TaskState()
    it = teacher_batches(tiny_teacher, DOCS * 5, HOOK, 16, buffer_tokens=100, state=state)
    next(it)
    state.cancel()
    with pytest.raises(Cancelled):
        list(it)
    with pytest.raises(ValueError, match="Layer 9 does not exist"):
        next(teacher_batches(tiny_teacher, DOCS, "resid_post.9", 16))
    with pytest.raises(ValueError, match="at least 1"):
        next(teacher_batches(tiny_teacher, DOCS, HOOK, 0))
    with pytest.raises(DocumentError, match="no tokens"):
        next(teacher_batches(tiny_teacher, ["", ""], HOOK, 16))
    # Empty documents among real ones are simply passed over.
    rows = torch.cat(list(teacher_batches(tiny_teacher, ["", "the fox", ""], HOOK, 16)))
    assert rows.shape[0] == len(tiny_teacher.tokenize(["the fox"], 16)[0]) - 1
