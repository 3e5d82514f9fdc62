"""Shared fixtures: temporary app folders for every test, and tiny models built in the test."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TINY_TEXT = (
    "the quick brown fox jumps over the lazy dog. a stitch in time saves nine. "
    "all that glitters is not gold. fortune favours the bold; the early bird gets the worm. "
    "computers are fast but programmers are slow. love is patient, love is kind. "
    "eat your vegetables and drink water. science is organised knowledge. 0123456789 !?,.;:'\"-"
)


@pytest.fixture(scope="session")
def qapp():
    """pytest-qt's QApplication, made as the app makes it: cycles are collected on the GUI
    thread only (gui.app.make_app), never on a worker thread that would free a widget there."""
    from gui.app import make_app

    return make_app()


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """No test touches the user's real cache or data folders."""
    root = tmp_path_factory.mktemp("appdirs")
    monkeypatch.setenv("DISTILLSCOPE_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("DISTILLSCOPE_CACHE_DIR", str(root / "cache"))
    yield


@pytest.fixture(scope="session")
def bundled_teacher(tmp_path_factory):
    """The real bundled Gemma 3 270M, converted once per machine (DISTILLSCOPE_MODEL_CACHE,
    set by `make test`) or once per session."""
    if not os.environ.get("DISTILLSCOPE_MODEL_CACHE"):
        os.environ["DISTILLSCOPE_MODEL_CACHE"] = str(tmp_path_factory.mktemp("models"))
    from core.models import load_teacher
    return load_teacher("bundled", device="cpu")


def build_tiny_model(folder: Path, arch: str = "gemma3", n_layers: int = 4, seed: int = 0) -> Path:
    """A random decoder-only model and a small byte-level BPE tokenizer, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TINY_TEXT] * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    torch.manual_seed(seed)
    vocab = len(fast)
    if arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        config = Gemma3TextConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
            sliding_window=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
        model = Gemma3ForCausalLM(config)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )
        model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-gemma3")


@pytest.fixture(scope="session")
def tiny_teacher(tiny_model_dir):
    from core.models import load_teacher
    return load_teacher(tiny_model_dir, device="cpu")


def close_and_check(window):
    """Close a MainWindow and fail if any of its worker threads is still running."""
    window.close()
    assert window.runner.is_finished(), "model worker thread still running after close"
    assert window.inspector.is_finished(), "inspector worker thread still running after close"
    assert window.io.is_finished(), "document worker thread still running after close"


@pytest.fixture
def make_window(qtbot):
    """MainWindow(**kw), shown; closed and checked for running workers after the test."""
    from gui.main_window import MainWindow

    windows = []

    def make(**kw):
        w = MainWindow(**kw)
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        close_and_check(w)
