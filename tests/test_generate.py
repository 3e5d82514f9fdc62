"""core.generate: batched top-k / temperature / top-p sampling with left padding and a KV cache.
A seed gives the same text (and each batch can be made again on its own), banned control tokens
are never drawn even when the model prefers them, EOS ends a row, left padding does not change a
row, and a cancel stops sampling within a token."""

import pytest
import torch

from core.errors import Cancelled, DistillscopeError
from core.generate import Sampling, banned_ids, left_pad, sample, sample_batches
from core.progress import TaskState

torch.set_num_threads(1)

PROMPTS = ["the cat sat", "a dog ran far away", "on the mat", "in a hat", "the", "lazy dog jumps over"]


class Biased(torch.nn.Module):
    """The model, with `bias` [V] (or [B, V]) added to its last logits: forces what it prefers."""

    def __init__(self, model, bias):
        super().__init__()
        self.model, self.bias = model, bias
        self.calls = 0

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=True, logits_to_keep=0):
        self.calls += 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache, logits_to_keep=logits_to_keep)
        out.logits = out.logits + self.bias.to(out.logits.dtype)[..., None, :] if self.bias.dim() == 2 \
            else out.logits + self.bias.to(out.logits.dtype)
        return out


def batch_of(teacher, prompts):
    return left_pad(teacher.tokenize(prompts, 64), teacher.pad_id)


def test_a_seed_gives_the_same_text_and_each_batch_can_be_made_alone(tiny_teacher):
    run = lambda seed, **kw: list(sample_batches(tiny_teacher, PROMPTS, 10, seed=seed, batch_size=4, **kw))  # noqa: E731
    a, b, other = run(7), run(7), run(8)
    assert [x.new_ids for x in a] == [x.new_ids for x in b]
    assert [x.new_ids for x in a] != [x.new_ids for x in other]
    assert [x.start for x in a] == [0, 4] and [len(x.new_ids) for x in a] == [4, 2]
    assert all(len(ids) <= 10 for x in a for ids in x.new_ids)
    again = run(7, skip=frozenset({0}))  # a resume that has batch 0 makes only batch 4, the same
    assert [x.start for x in again] == [4] and again[0].new_ids == a[1].new_ids


def test_per_prompt_budgets_give_each_batch_its_largest(tiny_teacher):
    batches = list(sample_batches(tiny_teacher, PROMPTS[:4], [2, 3, 9, 5], seed=0, batch_size=2))
    assert [b.max_new_tokens for b in batches] == [3, 9]


def test_banned_tokens_are_never_sampled_even_when_the_model_prefers_them(tiny_teacher):
    tok = tiny_teacher.tokenizer
    banned = banned_ids(tok)
    assert banned == sorted({tok.pad_token_id, tok.bos_token_id}) and tok.eos_token_id not in banned
    vocab = tiny_teacher.model.get_output_embeddings().weight.shape[0]
    bias = torch.zeros(vocab)
    bias[banned] = 50.0  # the model would say almost nothing else
    bias[tok.eos_token_id] = -float("inf")  # and never stop
    ids, mask = batch_of(tiny_teacher, PROMPTS)
    rows = sample(Biased(tiny_teacher.model, bias), ids, mask, 20, banned, tok.eos_token_id,
                  torch.Generator().manual_seed(0))
    assert all(len(r) == 20 for r in rows)
    assert not {t for r in rows for t in r} & set(banned)
    unbanned = sample(Biased(tiny_teacher.model, bias), ids, mask, 5, [], tok.eos_token_id,
                      torch.Generator().manual_seed(0))
    assert {t for r in unbanned for t in r} <= set(banned)  # the bias does what it says


def test_eos_ends_a_row_and_a_batch_stops_when_every_row_has_ended(tiny_teacher):
    tok = tiny_teacher.tokenizer
    vocab = tiny_teacher.model.get_output_embeddings().weight.shape[0]
    ids, mask = batch_of(tiny_teacher, PROMPTS[:3])
    bias = torch.zeros(3, vocab)
    bias[0, tok.eos_token_id] = 50.0  # row 0 ends at once
    bias[1:, tok.eos_token_id] = -float("inf")  # rows 1 and 2 never end
    model = Biased(tiny_teacher.model, bias)
    rows = sample(model, ids, mask, 12, banned_ids(tok), tok.eos_token_id, torch.Generator().manual_seed(1))
    assert rows[0] == [] and len(rows[1]) == len(rows[2]) == 12
    assert tok.eos_token_id not in rows[1] + rows[2]
    bias[:, tok.eos_token_id] = 50.0  # every row ends at once: one forward pass, not 12
    model.calls = 0
    rows = sample(model, ids, mask, 12, banned_ids(tok), tok.eos_token_id, torch.Generator().manual_seed(1))
    assert rows == [[], [], []] and model.calls == 1


def test_left_padding_leaves_a_row_as_it_would_be_alone(tiny_teacher):
    greedy = Sampling(top_k=1)  # the most likely token: no randomness between the two runs
    alone = list(sample_batches(tiny_teacher, ["the"], 8, sampling=greedy, fast=False))[0].new_ids[0]
    padded = list(sample_batches(tiny_teacher, ["lazy dog jumps over the mat", "the"], 8, sampling=greedy,
                                 fast=False))[0].new_ids[1]
    assert alone == padded and len(alone) > 0


def test_a_cancel_stops_sampling_within_a_token(tiny_teacher):
    steps = []

    def on_progress(done, total, message):
        steps.append(message)
        if len(steps) == 3:
            state.cancel()

    state = TaskState(on_progress)
    with pytest.raises(Cancelled):
        list(sample_batches(tiny_teacher, PROMPTS, 50, batch_size=2, state=state))
    assert len(steps) == 3 and steps[0].startswith("Sampling texts 1-2 of 6: token 1/50")


def test_bad_settings_say_what_is_wrong(tiny_teacher):
    with pytest.raises(DistillscopeError, match="temperature"):
        Sampling(temperature=0)
    with pytest.raises(DistillscopeError, match="top_p"):
        Sampling(top_p=1.5)
    with pytest.raises(DistillscopeError, match="batch size"):
        list(sample_batches(tiny_teacher, PROMPTS, 4, batch_size=0))
    assert list(sample_batches(tiny_teacher, [], 4)) == []
    ids, mask = batch_of(tiny_teacher, PROMPTS[:2])
    assert sample(tiny_teacher.model, ids, mask, 0, [], 2, torch.Generator()) == [[], []]
