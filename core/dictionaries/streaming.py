"""Training batches streamed from the teacher, for when there is no activation cache.

    batches = teacher_batches(teacher, corpus.documents, "resid_post.6", batch_size=4096, epochs=2)
    train_sae(sae, batches, TrainConfig(...))

The same contract as `train.activation_batches`: shuffled float32 rows [batch_size, d], the last
batch short unless `drop_last`. Rows are the token activations an extraction in "tokens" mode
stores (padding and, unless asked, BOS left out). Each epoch visits the documents in a seeded
random order, runs them through the teacher a buffer of about `buffer_tokens` rows at a time
(stopping the forward pass at the hook) and shuffles the rows within that buffer; leftovers
carry into the next buffer.

The order depends only on the seed and the documents' token counts, never on activation values,
so the batch sequence is reproducible and a resumed job can skip the batches it already trained
on. Buffers whose batches are all skipped are not run through the teacher at all; only the few
leftover rows they carry forward are computed when first needed (in a differently padded forward
pass, so equal to the uninterrupted run's rows within float rounding).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch

from core.activations import pad_batch, plan_batches
from core.errors import DocumentError
from core.models import HookPoint, Teacher, bfloat16_twin, capture
from core.progress import TaskState


def _activations(teacher: Teacher, hook: HookPoint, token_lists: list[list[int]], docs: list[int],
                 batch_tokens: int, state: TaskState) -> dict[int, torch.Tensor]:
    """Full activations [len, d] (float32, on the teacher's device) of each document in `docs`."""
    out = {}
    for batch in plan_batches([len(token_lists[i]) for i in docs], batch_tokens):
        state.check_cancelled()
        batch = [docs[j] for j in batch]
        ids, mask = pad_batch([token_lists[i] for i in batch], teacher.pad_id)
        acts = capture(teacher, ids, mask, [hook], state)[hook].float()
        for row, i in enumerate(batch):
            out[i] = acts[row, : len(token_lists[i])]
    return out


def teacher_batches(
    teacher: Teacher,
    documents: Sequence,
    hook: HookPoint | str,
    batch_size: int,
    max_length: int = 256,
    batch_tokens: int = 4096,
    seed: int = 0,
    epochs: int = 1,
    buffer_tokens: int = 32_768,
    include_bos: bool = False,
    drop_last: bool = False,
    skip_batches: int = 0,
    state: Optional[TaskState] = None,
    quick: bool = False,
) -> Iterator[torch.Tensor]:
    """Shuffled float32 batches [batch_size, d] of `documents`' (objects with .text, or strings)
    token activations at `hook`, computed by `teacher` as they are needed.

    max_length / batch_tokens / include_bos: as in ExtractSettings. buffer_tokens: rows shuffled
    together (memory: buffer_tokens * d * 4 bytes). skip_batches: leave out the first this many
    batches (resuming a job), the rest being identical to an uninterrupted run with the same seed.
    quick: the teacher's bfloat16 twin where it pays (ExtractSettings precision 'fast').
    """
    hook = HookPoint.parse(hook) if isinstance(hook, str) else hook
    teacher.check_hook(hook)
    runner = bfloat16_twin(teacher, hook.layer) if quick else teacher
    if min(batch_size, epochs, buffer_tokens, batch_tokens) < 1 or skip_batches < 0:
        raise ValueError("batch_size, epochs, buffer_tokens and batch_tokens must be at least 1, "
                         "skip_batches at least 0.")
    state = state or TaskState()
    texts = [d if isinstance(d, str) else d.text for d in documents]
    token_lists: list[list[int]] = []
    for start in range(0, len(texts), 1000):
        state.check_cancelled()
        state.report(start, len(texts), "Tokenizing")
        token_lists += teacher.tokenize(texts[start:start + 1000], max_length)
    # Content positions per document: the rule of activations.content_mask (pads never exist here).
    bos = None if include_bos else teacher.bos_id
    positions = [torch.tensor([p for p, t in enumerate(tokens) if t != bos], dtype=torch.long)
                 for tokens in token_lists]
    if sum(len(p) for p in positions) == 0:
        raise DocumentError("The documents hold no tokens to train on.", "Give documents with some text.")

    g = torch.Generator().manual_seed(seed)
    empty = torch.zeros(0, dtype=torch.long)
    carry_doc, carry_pos, carry_acts = empty, empty, None  # carry_acts None: not computed yet
    batch_index = 0  # batches produced so far, skipped ones included

    def materialise(doc: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Activations of rows known so far only by (document, position)."""
        if not len(doc):
            return torch.zeros(0, teacher.d_model, device=teacher.device)
        acts = _activations(runner, hook, token_lists, sorted(set(doc.tolist())), batch_tokens, state)
        return torch.stack([acts[i][p] for i, p in zip(doc.tolist(), pos.tolist())])

    for epoch in range(epochs):
        order = [i for i in torch.randperm(len(texts), generator=g).tolist() if len(positions[i])]
        done, start = 0, 0
        while start < len(order):
            chunk, rows = [], 0
            while start < len(order) and rows < buffer_tokens:
                chunk.append(order[start])
                rows += len(positions[order[start]])
                start += 1
            doc = torch.cat([carry_doc] + [torch.full((len(positions[i]),), i) for i in chunk])
            pos = torch.cat([carry_pos] + [positions[i] for i in chunk])
            perm = torch.randperm(len(doc), generator=g)
            n_full = len(doc) // batch_size
            rest = perm[n_full * batch_size:]
            if batch_index + n_full <= skip_batches:
                # Every batch of this buffer is skipped: only its leftover rows' identities matter.
                carry_doc, carry_pos, carry_acts = doc[rest], pos[rest], None
            else:
                if carry_acts is None:
                    carry_acts = materialise(carry_doc, carry_pos)
                acts = _activations(teacher, hook, token_lists, chunk, batch_tokens, state)
                buf = torch.cat([carry_acts] + [acts[i][positions[i].to(acts[i].device)] for i in chunk])
                del acts
                buf = buf[perm.to(buf.device)]
                for b in range(max(skip_batches - batch_index, 0), n_full):
                    yield buf[b * batch_size:(b + 1) * batch_size]
                carry_doc, carry_pos = doc[rest], pos[rest]
                carry_acts = buf[n_full * batch_size:]
            batch_index += n_full
            done += len(chunk)
            state.report(epoch * len(order) + done, epochs * len(order),
                         f"Epoch {epoch + 1}/{epochs}: {done:,}/{len(order):,} documents")
    if len(carry_doc) and not drop_last and batch_index >= skip_batches:
        yield carry_acts if carry_acts is not None else materialise(carry_doc, carry_pos)


__all__ = ["teacher_batches"]
