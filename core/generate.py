"""Sampling continuations of many prompts from a causal language model, in batches.

    from core.generate import Sampling, sample_batches
    for batch in sample_batches(teacher, prompts, max_new_tokens=96, seed=0, state=state):
        texts = [teacher.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch.new_ids]

What the variant job's "generated" text (sequence-level distillation) and the provenance demo set
(resources/demo/build_provenance.py) are made with. Each step keeps the top_k largest logits,
divides them by the temperature and keeps the smallest prefix whose probability reaches top_p
(nucleus), then draws one token. Written out instead of `model.generate`: its top-p sorts the
whole vocabulary every step (0.18 s for a batch of 16 of the bundled teacher's 262k tokens),
while top-k first leaves only top_k to sort.

- Left padding with positions that count only real tokens, so a padded row sees what it would
  alone; a KV cache, and the head applied to the last position only.
- Control and image tokens are never sampled (`banned_ids`); EOS ends a row (it stays allowed).
- Batches are consecutive runs of `batch_size` prompts in the order given, and batch `start`
  (the index of its first prompt) draws from a generator seeded with `seed + start`: the same
  prompts, order, seed, torch and CPU give the same tokens, and any batch can be made again on
  its own (a resumed job skips the batches it has).
- bfloat16 autocast for a float32 model on a CPU with AMX tiles (`fast`, about 2x faster);
  float32 elsewhere.
- Cancellation is checked before every token (core.errors.Cancelled); progress is reported in
  prompts done, with the token of the batch in the message.

core.steering.generate_tokens is the other generator: one prompt, greedy or plain temperature,
streamed token by token with steering hooks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Sequence, Union

import torch

from core.errors import DistillscopeError
from core.progress import TaskState

# Added tokens that are not text but that a base model emits now and then (Gemma 3's image
# markers are not flagged special).
NON_TEXT_TOKENS = ("[multimodal]", "<start_of_image>", "<end_of_image>")


@dataclass(frozen=True)
class Sampling:
    """How each token is drawn: top-k, then temperature, then top-p."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50

    def __post_init__(self):
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise DistillscopeError(f"The sampling temperature is {self.temperature}.", "Give a number above 0.")
        if not 0 < self.top_p <= 1:
            raise DistillscopeError(f"top_p is {self.top_p}.", "Give a number above 0 and at most 1.")
        if self.top_k < 1:
            raise DistillscopeError(f"top_k is {self.top_k}.", "Give 1 or more.")

    def to_dict(self) -> dict:
        return asdict(self)


def banned_ids(tokenizer) -> list[int]:
    """Control and image tokens, never text: sampled, they decode to '<start_of_image>' and the
    like (the base model emits them now and then). EOS stays allowed: it ends a document."""
    specials = [i for i, t in tokenizer.added_tokens_decoder.items()
                if t.special or t.content in NON_TEXT_TOKENS]
    return sorted(i for i in specials if i != tokenizer.eos_token_id)


def precision(model: torch.nn.Module, fast: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for a float32 model on a CPU with AMX tiles when `fast` (2x faster
    there); nothing elsewhere."""
    from core.models import fast_precision

    if not fast:
        return contextlib.nullcontext()
    p = next(model.parameters())
    return fast_precision(p.device, p.dtype)


def left_pad(token_lists: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) [B, T] int64, each row's tokens at its right end."""
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        if tokens:
            ids[row, width - len(tokens):] = torch.tensor(list(tokens), dtype=torch.long)
            mask[row, width - len(tokens):] = 1
    return ids, mask


def _accepts_logits_to_keep(model) -> bool:
    from core.steering import _accepts_logits_to_keep as accepts

    return accepts(model)


def sample(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
           banned: Sequence[int], eos_id: Optional[int], gen: torch.Generator,
           sampling: Sampling = Sampling(), fast: bool = True, state: Optional[TaskState] = None,
           on_step: Optional[Callable[[int], None]] = None) -> list[list[int]]:
    """New token ids of each row of the left-padded batch (ids, mask), up to (not including) its
    EOS, at most max_new_tokens. `gen` draws every token (on the model's device); `state` is
    checked for cancellation before every step and `on_step(t)` called with the step number."""
    k, temperature, top_p = sampling.top_k, sampling.temperature, sampling.top_p
    if max_new_tokens <= 0 or len(ids) == 0:
        return [[] for _ in range(len(ids))]
    eos = -1 if eos_id is None else int(eos_id)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    # Left padding: positions count only real tokens, so a padded row sees what it would alone.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    out, cache, step_ids = [], None, ids
    banned = list(banned)
    with torch.no_grad(), precision(model, fast):
        for step in range(max_new_tokens):
            if state is not None:
                state.check_cancelled()
            if on_step is not None:
                on_step(step)
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=pos,
                        past_key_values=cache, use_cache=True, **extra)
            cache = res.past_key_values
            logits = res.logits[:, -1, :].float()
            logits[:, banned] = -float("inf")
            top, idx = logits.topk(min(k, logits.shape[-1]), dim=-1)  # sorted, largest first
            probs = torch.softmax(top / temperature, dim=-1)
            # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            drop = probs.cumsum(-1) - probs >= top_p
            probs = probs.masked_fill(drop, 0)
            choice = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=gen)
            token = idx.gather(-1, choice).squeeze(-1)
            token = torch.where(done, torch.full_like(token, eos), token)
            out.append(token)
            done |= token == eos
            if done.all():
                break
            step_ids = token[:, None]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            pos = pos[:, -1:] + 1
    rows = torch.stack(out, dim=1).tolist()
    return [row[:row.index(eos)] if eos in row else row for row in rows]


@dataclass
class Batch:
    """One batch of `sample_batches`: prompts start .. start + len(new_ids) - 1."""

    start: int
    new_ids: list[list[int]]
    max_new_tokens: int  # the batch's budget (the largest of its prompts')

    @property
    def indices(self) -> range:
        return range(self.start, self.start + len(self.new_ids))


def batch_starts(n_prompts: int, batch_size: int) -> list[int]:
    return list(range(0, n_prompts, batch_size))


def sample_batches(teacher, prompts: Sequence[str], max_new_tokens: Union[int, Sequence[int]], *,
                   seed: int = 0, batch_size: int = 32, sampling: Sampling = Sampling(),
                   fast: bool = True, state: Optional[TaskState] = None, skip: frozenset = frozenset(),
                   max_prompt_tokens: int = 2048) -> Iterator[Batch]:
    """Sample a continuation of each prompt with `teacher` (a core.models.Teacher), batch after
    batch (see the module's notes). `max_new_tokens` is one budget or one per prompt (a batch
    samples up to its largest, so a row may run past its own). Batches whose start is in `skip`
    are not sampled (nor yielded)."""
    if batch_size < 1:
        raise DistillscopeError(f"The sampling batch size is {batch_size}.", "Give 1 or more.")
    n = len(prompts)
    budgets = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(b) for b in max_new_tokens]
    if len(budgets) != n:
        raise ValueError(f"{len(budgets)} budgets for {n} prompts")
    state = state or TaskState()
    tok = teacher.tokenizer
    banned = banned_ids(tok)
    device = teacher.device
    done_before = sum(min(batch_size, n - s) for s in batch_starts(n, batch_size) if s in skip)
    for start in batch_starts(n, batch_size):
        if start in skip:
            continue
        end = min(start + batch_size, n)
        token_lists = teacher.tokenize(list(prompts[start:end]), max_prompt_tokens)
        if any(not t for t in token_lists):
            raise DistillscopeError("A prompt has no tokens.", "Give every prompt some text.")
        ids, mask = left_pad(token_lists, teacher.pad_id)
        budget = max(budgets[start:end])
        gen = torch.Generator(device=device).manual_seed(seed + start)

        def on_step(t: int, start=start, end=end, budget=budget) -> None:
            state.report(done_before, n, f"Sampling texts {start + 1:,}-{end:,} of {n:,}: token {t + 1}/{budget}")

        new = sample(teacher.model, ids.to(device), mask.to(device), budget, banned, tok.eos_token_id, gen,
                     sampling, fast, state, on_step)
        done_before += end - start
        state.report(done_before, n, f"Sampled {done_before:,} of {n:,} texts")
        yield Batch(start=start, new_ids=new, max_new_tokens=budget)
