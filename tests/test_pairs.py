"""Model pairs (issue 6): the tokenizer check refuses mismatched pairs naming the difference;
hooks must exist in both and be equally wide; paired extraction puts both models' rows of the
same tokens in one cache, equal to each model's own capture(), resumable and refusing folders
that hold something else."""

import json
import shutil

import pytest
import torch

from core.activations import ActivationCache, ExtractSettings
from core.errors import CacheError, Cancelled
from core.models import HookPoint, capture, load_teacher
from core.pairs import (ModelPair, PairedCache, PairError, auto_pair_cache_folder, check_hooks,
                        check_same_tokenizer, extract_pair, load_pair)
from core.progress import TaskState
from tests.conftest import TINY_TEXT, build_tiny_model
from tests.test_jobs import write_corpus

torch.set_num_threads(1)


def build_model(folder, text=TINY_TEXT, vocab_size=400, specials=("<pad>", "<bos>", "<eos>"),
                hidden=32, n_layers=4, seed=0):
    """A tiny Gemma 3 whose tokenizer is trained on `text` with these special tokens (in this id
    order) and `vocab_size` (as conftest.build_tiny_model, which fixes them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text] * 4, trainer)
    bos = specials.index("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=64,
                              num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=16, max_position_embeddings=512, sliding_window=16,
                              pad_token_id=specials.index("<pad>"), bos_token_id=bos,
                              eos_token_id=specials.index("<eos>"))
    folder.mkdir(parents=True, exist_ok=True)
    Gemma3ForCausalLM(config).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def sibling_dir(tmp_path_factory):
    """Same tokenizer as conftest's tiny model, other weights: a pair."""
    return build_tiny_model(tmp_path_factory.mktemp("sibling") / "tiny-sibling", seed=7)


@pytest.fixture(scope="module")
def pair(tiny_model_dir, sibling_dir):
    return load_pair(str(tiny_model_dir), str(sibling_dir), device="cpu")


# -- tokenizers -----------------------------------------------------------------------------------


def test_a_pair_sharing_the_tokenizer_loads(pair, tiny_model_dir):
    assert isinstance(pair, ModelPair) and pair.d_model == 32 and pair.n_layers == 4
    assert pair.identity()["base"]["source"] == str(tiny_model_dir.resolve())
    check_same_tokenizer(pair.variant, pair.base)


def test_another_vocabulary_is_refused_naming_the_sizes(tiny_model_dir, tiny_teacher, tmp_path):
    stranger = build_model(tmp_path / "small-vocab", vocab_size=330)
    with pytest.raises(PairError) as info:
        load_pair(str(tiny_model_dir), str(stranger), device="cpu")
    message = str(info.value)
    assert "do not share a tokenizer" in message and "vocabularies have" in message
    assert f"{len(tiny_teacher.tokenizer):,}" in message and "variant" in message.lower()


def test_other_special_ids_are_refused_unless_only_content_is_checked(tiny_teacher, tmp_path):
    swapped = load_teacher(build_model(tmp_path / "swapped", specials=("<bos>", "<pad>", "<eos>")), device="cpu")
    assert len(swapped.tokenizer) == len(tiny_teacher.tokenizer)
    with pytest.raises(PairError) as info:
        check_same_tokenizer(tiny_teacher, swapped)
    assert "BOS token ids are 1 and 0" in str(info.value) and "tokenizer_check = 'content'" in str(info.value)
    check_same_tokenizer(tiny_teacher, swapped, level="content")  # same regular tokens


def test_other_merges_are_refused_naming_the_probe_string(tiny_teacher, tmp_path):
    other_text = " ".join(reversed(TINY_TEXT.split())).upper() + " " + TINY_TEXT[::-1]
    other = load_teacher(build_model(tmp_path / "other-merges", text=other_text), device="cpu")
    with pytest.raises(PairError) as info:
        check_same_tokenizer(tiny_teacher, other,
                             probes=("the quick brown fox", "love is patient"))
    assert len(other.tokenizer) == len(tiny_teacher.tokenizer)  # same size and special ids...
    assert "tokenize 'the quick brown fox' differently (from token 1:" in info.value.what  # after BOS


# -- hooks ----------------------------------------------------------------------------------------


def test_hooks_must_exist_in_both_and_be_equally_wide(tiny_teacher, tmp_path):
    shallow = load_teacher(build_tiny_model(tmp_path / "shallow", n_layers=2), device="cpu")
    with pytest.raises(PairError) as info:
        check_hooks(ModelPair(tiny_teacher, shallow), "resid_post.3")
    assert "variant model cannot be read at resid_post.3" in str(info.value)
    assert check_hooks(ModelPair(tiny_teacher, shallow), "mlp_out.1") == HookPoint("mlp_out", 1)
    wide = load_teacher(build_model(tmp_path / "wide", hidden=48), device="cpu")
    check_same_tokenizer(tiny_teacher, wide)  # the same tokenizer...
    with pytest.raises(PairError) as info:
        check_hooks(ModelPair(tiny_teacher, wide), "resid_post.1")
    assert "32 wide and the variant 48" in str(info.value)  # ...but not the same width


# -- paired extraction ----------------------------------------------------------------------------


def docs(tmp_path, n=24):
    from core.jobs.sae_job import load_documents

    return load_documents(str(write_corpus(tmp_path / "docs.jsonl", n=n)))


SETTINGS = ExtractSettings(hook="resid_post.2", mode="tokens", max_length=40, batch_tokens=200,
                           flush_seconds=0.0)


def test_paired_rows_equal_each_models_own_capture(pair, tmp_path):
    documents = docs(tmp_path)
    cache = extract_pair(pair, documents, tmp_path / "cache", SETTINGS)
    assert cache.manifest["complete"] and len(cache.manifest["shards"]) > 1
    hook = HookPoint.parse("resid_post.2")
    seen = 0
    for shard in cache.shards():
        acts, doc_index, position = shard["acts"], shard["doc_index"], shard["position"]
        assert acts.shape[1:] == (2, 32)
        for d in sorted(set(doc_index.tolist())):
            rows = doc_index == d
            ids = pair.base.tokenize([documents[d].text], 40)[0]
            x = torch.tensor([ids])
            for m, model in enumerate(pair.models):
                own = capture(model, x, torch.ones_like(x), [hook])[hook][0]
                torch.testing.assert_close(acts[rows, m], own[position[rows].long()], atol=1e-5, rtol=1e-4)
            assert (shard["token_id"][rows] == torch.tensor(ids)[position[rows].long()]).all()
            assert 0 not in position[rows].tolist()  # BOS left out
            seen += int(rows.sum())
    assert seen == cache.n_rows
    mean, std = cache.stats()
    assert mean.shape == (2, 32) and std.shape == (2, 32)
    all_rows = torch.cat([s["acts"] for s in cache.shards()])
    torch.testing.assert_close(mean, all_rows.double().mean(0).float(), atol=1e-4, rtol=1e-4)
    batches = list(cache.batches(64, seed=0))
    assert batches[0].shape == (64, 2, 32) and sum(len(b) for b in batches) == cache.n_rows
    # Extracting again reuses the complete cache.
    again = extract_pair(pair, documents, tmp_path / "cache", SETTINGS)
    assert again.manifest["shards"] == cache.manifest["shards"]


class CancelAfter(TaskState):
    """Cancels once `n` batches of documents were reported done."""

    def __init__(self, n):
        super().__init__()
        self.n, self.reports = n, 0

    def report(self, done, total, message=""):
        if "documents" in message:
            self.reports += 1
            if self.reports >= self.n:
                self.cancel()


def test_an_interrupted_paired_extraction_resumes_to_the_same_cache(pair, tmp_path):
    documents = docs(tmp_path)
    whole = extract_pair(pair, documents, tmp_path / "whole", SETTINGS)
    with pytest.raises(Cancelled):
        extract_pair(pair, documents, tmp_path / "split", SETTINGS, CancelAfter(2))
    partial = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert not partial["complete"] and 0 < len(partial["shards"])
    with pytest.raises(CacheError):
        PairedCache(tmp_path / "split")  # unfinished: refused until resumed
    resumed = extract_pair(pair, documents, tmp_path / "split", SETTINGS)

    def rows(cache):
        parts = list(cache.shards())
        acts = torch.cat([p["acts"] for p in parts])
        key = torch.cat([p["doc_index"] * 1000 + p["position"].long() for p in parts])
        return acts[key.argsort()]
    assert resumed.n_rows == whole.n_rows
    torch.testing.assert_close(rows(resumed), rows(whole), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(resumed.stats()[0], whole.stats()[0], atol=1e-5, rtol=1e-4)


def test_folders_holding_something_else_are_refused(pair, tiny_teacher, tmp_path):
    documents = docs(tmp_path, n=6)
    cache = extract_pair(pair, documents, tmp_path / "cache", SETTINGS)
    other = ExtractSettings(**{**SETTINGS.__dict__, "hook": "resid_post.1"})
    with pytest.raises(CacheError) as info:
        extract_pair(pair, documents, tmp_path / "cache", other)
    assert "different pair, hook, corpus or setting" in str(info.value)
    swapped = ModelPair(pair.variant, pair.base)
    with pytest.raises(CacheError):
        extract_pair(swapped, documents, tmp_path / "cache", SETTINGS)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError) as info:
        extract_pair(pair, documents, tmp_path / "mine", SETTINGS)
    assert "not empty" in str(info.value) and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(CacheError) as info:  # a paired cache is not a single-model cache
        ActivationCache(cache.folder)
    assert "format" in str(info.value)
    with pytest.raises(CacheError):
        extract_pair(pair, documents, tmp_path / "pooled", ExtractSettings(hook="resid_post.1", mode="pooled"))
    # A damaged shard is caught when the cache is opened.
    damaged = tmp_path / "damaged"
    shutil.copytree(cache.folder, damaged)
    shard = damaged / cache.manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CacheError) as info:
        PairedCache(damaged)
    assert "wrong size" in str(info.value)


def test_auto_folders_differ_by_pair_and_settings(pair, tmp_path):
    documents = docs(tmp_path, n=6)
    a = auto_pair_cache_folder(pair, documents, SETTINGS)
    assert a == auto_pair_cache_folder(pair, documents, SETTINGS)
    assert a != auto_pair_cache_folder(ModelPair(pair.variant, pair.base), documents, SETTINGS)
    assert a != auto_pair_cache_folder(pair, documents[:3], SETTINGS)
    assert a.name.startswith("pair-")
