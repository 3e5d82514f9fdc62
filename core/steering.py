"""Steering: add directions to the residual stream while the model generates (seed 003, issue 6).

    d = Direction.from_feature(sae, 123, teacher)            # a dictionary feature's decoder row
    c = Direction.from_contrast(ContrastVector.load(path))   # a saved contrast, back in raw units
    x = Direction.from_vector("latent 7 (variant)", W_dec_B[7], "resid_post.6")   # a crosscoder's
    for piece in generate_stream(teacher, "The weather", [(d, 0.3), (c, -0.2)], 40):
        print(piece, end="", flush=True)

A direction lives in the residual after one decoder block (`resid_post.L`). Its strength alpha
is relative to the typical residual norm there, skipping BOS: the vector added to every token but
BOS is

    alpha * typical_norm(teacher, hook) * unit(direction)

where `typical_norm` is the *centred* residual norm, sqrt(mean_t ||h_t - mean(h)||^2) over the
non-BOS tokens t of a few reference texts: how far a token's residual typically lies from the
mean residual. It is centred because the residual of the bundled teacher (as of many language
models) has a few dimensions of huge, nearly constant size: at resid_post.6 dimension 163
averages 2,743, dimension 87 1,906 and dimension 400 1,347 on every token. They carry most of the
plain norm (a mean token norm of 3,745, of which the mean vector alone is 3,624) but no per-token
meaning, since every token has them; with the plain norm as the yardstick, alpha 1 was a push
three times larger than tokens differ by, and greedy generation collapsed into one repeated
token. The centred norm is 728 at resid_post.3, 1,140 at resid_post.6 and 5,641 at resid_post.12.
BOS is left out of it (its residual is tens of times any other token's) and is never steered: it
carries no content, and every later token attends to it.

Measured on the bundled teacher at resid_post.6 (greedy, 25 new tokens, two prompts): a starter
dictionary feature's decoder row (#285 ' computer', #1021 ' food', #2948 ' death', #1763
' beer') turns the text visibly towards its topic from alpha 0.1 to 0.2 and keeps it fluent up to
about 0.4; around 0.75 it repeats itself or breaks, from 1 it is gibberish. A saved contrast
(food vs computers on the demo corpus, mapped back to raw units) is stronger per alpha: on topic
from 0.05 to 0.3, repetitive from 0.4, gibberish from 1.5; -0.25 and -0.5 push the other way
(work, "a highly automated system"). Hence SLIDER_RANGE: the sliders span -1..1, and the
numeric boxes reach further for anyone who wants to see a model break.

Hooks are attached only for the duration of each forward pass (`Steering` as a context manager)
and removed on exit, error or cancel. A stream suspended between tokens holds no hooks, so base
and steered generations can be interleaved on one model in one thread. Two threads must not run
the same model at once while one of them steers: a hook on a shared module fires for both.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import torch

from core.errors import DistillscopeError
from core.models import HookPoint, Teacher
from core.progress import TaskState

# Texts the typical residual norm is measured on: varied registers, a few dozen tokens each.
REFERENCE_TEXTS = (
    "The committee met on Tuesday to discuss the budget for next year, but no decision was made.",
    "She opened the window, and the smell of rain and cut grass drifted into the quiet kitchen.",
    "To install the package, run the command below and restart the application when it finishes.",
    "In 1869 the transcontinental railroad was completed, linking the east and west coasts.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "I told him twice that the meeting was cancelled, yet he still showed up at nine o'clock.",
    "Prices rose by 3.2 percent in March, the fastest pace since the autumn of last year.",
)
REFERENCE_MAX_LENGTH = 64  # tokens per reference text
# The strengths a slider spans (see the measurements above): fluent steering lies within about
# +-0.5 of the centred norm for dictionary features, less for contrasts; +-1 is already gibberish.
SLIDER_RANGE = (-1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Directions


def _as_hook(hook) -> HookPoint:
    try:
        hp = hook if isinstance(hook, HookPoint) else HookPoint.parse(str(hook))
    except ValueError as exc:
        raise DistillscopeError(str(exc), "Give the hook as resid_post.LAYER, e.g. resid_post.6.")
    if hp.kind != "resid_post":
        raise DistillscopeError(f"Steering adds to the residual stream (resid_post.L), not {hp.name}.",
                                f"Use resid_post.{hp.layer}.")
    return hp


@dataclass(frozen=True, eq=False)
class Direction:
    """A named vector in a model's residual after block `hook.layer`, and where it came from.

    `vector` is kept as given (float32, CPU; a decoder row, a contrast mapped to raw units, any
    raw vector); steering only uses its direction, `unit`. Compare directions by `name`/`source`,
    not with ==."""

    name: str
    vector: torch.Tensor  # [D]
    hook: HookPoint
    source: str = ""
    # Multiplies the strength: the vector added is alpha * gain * typical_norm * unit. 1 for
    # every direction but a crosscoder latent steering each model with its own decoder row,
    # where it is that row's norm over the larger of the two (`crosscoder_direction`), so a
    # variant-only latent barely moves the base.
    gain: float = 1.0

    def __post_init__(self):
        v = torch.as_tensor(self.vector).detach()
        if v.ndim != 1 and v.numel() == max(v.shape, default=0):  # [1, D] or [D, 1]
            v = v.reshape(-1)
        if v.ndim != 1 or v.numel() == 0:
            raise DistillscopeError(f"The direction '{self.name}' must be one vector; got shape "
                                    f"{list(v.shape)}.", "Pass a 1-D tensor as wide as the model.")
        v = v.float().cpu()
        if not torch.isfinite(v).all():
            raise DistillscopeError(f"The direction '{self.name}' holds NaN or infinite values.",
                                    "Check where the vector came from.")
        if float(v.norm()) == 0.0:
            raise DistillscopeError(f"The direction '{self.name}' is the zero vector, so it points "
                                    "nowhere.", "Pick another feature or vector (a dead feature's "
                                    "decoder row can be zero).")
        gain = self.gain
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain < 0:
            raise DistillscopeError(f"The direction '{self.name}' has gain {gain!r}.", "Give a number of 0 or more.")
        object.__setattr__(self, "gain", float(gain))
        object.__setattr__(self, "vector", v)
        object.__setattr__(self, "hook", _as_hook(self.hook))

    @property
    def d_model(self) -> int:
        return self.vector.numel()

    @property
    def unit(self) -> torch.Tensor:
        return self.vector / self.vector.norm()

    def check_fits(self, teacher: Teacher) -> None:
        """A DistillscopeError unless the teacher has this layer and this width."""
        if self.hook.layer >= teacher.n_layers:
            raise DistillscopeError(f"'{self.name}' is at {self.hook.name}, but {teacher.name} has "
                                    f"layers 0 to {teacher.n_layers - 1}.",
                                    "Choose a direction made for this model.")
        if self.d_model != teacher.d_model:
            raise DistillscopeError(f"'{self.name}' is {self.d_model} wide, but {teacher.name}'s "
                                    f"residual is {teacher.d_model} wide.",
                                    "Choose a direction made for this model.")

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_vector(cls, name: str, vector, hook, source: str = "vector") -> "Direction":
        """Any raw residual-space vector, e.g. a crosscoder latent's decoder row for one model."""
        return cls(name, torch.as_tensor(vector), _as_hook(hook), source)

    @classmethod
    def from_feature(cls, sae, index: int, teacher: Optional[Teacher] = None,
                     name: Optional[str] = None, dictionary: str = "") -> "Direction":
        """Feature `index` of a dictionary: its decoder row W_dec[index], at the dictionary's hook.

        With a teacher, the dictionary is checked to read this model (its layer and width, a
        DictionaryError saying what does not fit). The SAE's input_scale only rescales the row,
        so the direction is the row itself."""
        from core.features.scoring import sae_hook

        hook = sae_hook(sae, teacher)
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise DistillscopeError(f"Feature '{index}' is not a number.", "e.g. feature:123")
        if not 0 <= index < sae.d_sae:
            raise DistillscopeError(f"Feature {index} does not exist; the dictionary has features "
                                    f"0 to {sae.d_sae - 1}.", "Pick an index in that range.")
        where = f" of {dictionary}" if dictionary else ""
        return cls(name or f"feature {index}", sae.W_dec[index].detach(), _as_hook(hook),
                   f"decoder row {index}{where} ({hook.name})")

    @classmethod
    def from_contrast(cls, cv, hook=None, name: Optional[str] = None) -> "Direction":
        """A saved contrast vector, mapped from its z-normalized space back to the residual.

        The contrast lives in z-space, z = (x - mean) / std per dimension, and is the unit
        difference of class means there: v ~ (mu_pos - mu_neg) / std. Multiplying by std gives
        std * v ~ mu_pos - mu_neg, the difference of the classes' mean residuals in raw units:
        the classic mean-difference steering vector, and the raw displacement that moves a
        document along v in z-space. (Dividing by std instead would give the gradient of the
        score, which inflates the dimensions with the least spread: tiny in the residual, huge
        in the vector.) A contrast without a stored z-normalization (one built in a student's
        space) cannot be mapped back and is refused."""
        if cv.std is None:
            raise DistillscopeError(f"The contrast '{cv.name}' was built in a space without a stored "
                                    f"z-normalization ({cv.space or 'unknown space'}), so it cannot "
                                    "be mapped back to the teacher's residual.",
                                    "Build the contrast on the teacher's vectors in the Contrast tab.")
        hook = hook if hook is not None else cv.hook
        if not hook:
            raise DistillscopeError(f"The contrast '{cv.name}' does not record its layer.",
                                    "Give the hook it was built at, e.g. resid_post.6.")
        hook = _as_hook(hook)
        if cv.hook and _as_hook(cv.hook) != hook:
            raise DistillscopeError(f"The contrast '{cv.name}' was built at {cv.hook}, not {hook.name}.",
                                    f"Steer it at {cv.hook}.")
        v, std = cv.vector.float().reshape(-1), cv.std.float().reshape(-1)
        if v.numel() != std.numel():
            raise DistillscopeError(f"The contrast '{cv.name}' has a {v.numel()}-wide vector but a "
                                    f"{std.numel()}-wide std.", "Save the contrast again.")
        return cls(name or f"contrast {cv.name}", v * std, hook,
                   f"contrast '{cv.name}' ({cv.positive} vs {cv.negative}) x std, {hook.name}")

    @classmethod
    def from_file(cls, path, hook=None, name: Optional[str] = None) -> "Direction":
        """A .safetensors file holding one vector (hook from its metadata 'hook', else `hook`),
        or a saved contrast file."""
        from safetensors import safe_open

        from core.contrast import FORMAT, ContrastVector

        path = Path(path)
        if not path.is_file():
            raise DistillscopeError(f"'{path}' does not exist.", "Give a .safetensors file holding one vector.")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") == FORMAT:
                    tensors = None
                else:
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise DistillscopeError(f"'{path}' is not a readable safetensors file ({exc}).",
                                    "Give a .safetensors file holding one vector.")
        if tensors is None:
            return cls.from_contrast(ContrastVector.load(path), hook, name)
        if len(tensors) != 1:
            raise DistillscopeError(f"'{path}' holds {len(tensors)} tensors "
                                    f"({', '.join(sorted(tensors)[:5]) or 'none'}); a direction file "
                                    "holds exactly one vector.", "Save the one vector on its own.")
        file_hook = meta.get("hook")
        if file_hook and hook is not None and _as_hook(file_hook) != _as_hook(hook):
            raise DistillscopeError(f"'{path}' says it is at {file_hook}, not {_as_hook(hook).name}.",
                                    f"Leave out the hook, or give {file_hook}.")
        hook = file_hook or hook
        if not hook:
            raise DistillscopeError(f"'{path}' does not say which layer it belongs to.",
                                    "Give the hook, e.g. --hook resid_post.6.")
        (key, vector), = tensors.items()
        return cls(name or path.name.removesuffix(".safetensors"), vector, _as_hook(hook),
                   f"{path} [{key}]")

    def save(self, path) -> Path:
        """One vector with its hook and name in the metadata (readable by from_file)."""
        from safetensors.torch import save

        from core.paths import atomic_write_bytes

        data = save({"vector": self.vector.contiguous()},
                    metadata={"hook": self.hook.name, "name": self.name, "source": self.source})
        atomic_write_bytes(Path(path), data)
        return Path(path)


# ---------------------------------------------------------------------------------------------
# The typical residual norm


_NORMS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_NORMS_LOCK = threading.Lock()


def non_bos_mask(ids: torch.Tensor, mask: torch.Tensor, bos_id: Optional[int]) -> torch.Tensor:
    """[B, T] bool: real tokens other than the first of each sequence (BOS, or the first token
    where the tokenizer adds none: it plays the same attention-sink role) and any BOS id."""
    from core.activations import content_mask

    keep = content_mask(ids, mask, bos_id).clone()
    keep[:, 0] = False
    return keep


@torch.no_grad()
def reference_residuals(teacher: Teacher, hook, texts: Sequence[str] = REFERENCE_TEXTS,
                        state: Optional[TaskState] = None,
                        max_length: int = REFERENCE_MAX_LENGTH) -> torch.Tensor:
    """[N, D] float32: the residual at `hook` of every non-BOS, non-pad token of `texts`."""
    from core.activations import pad_batch
    from core.models import capture

    hook = _as_hook(hook)
    teacher.check_hook(hook)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DistillscopeError("No reference text to measure the typical residual norm on.",
                                "Pass at least one non-empty text.")
    ids, mask = pad_batch(teacher.tokenize(list(texts), max_length), teacher.pad_id)
    acts = capture(teacher, ids, mask, [hook], state)[hook].float().cpu()
    keep = non_bos_mask(ids, mask, teacher.bos_id)
    if not keep.any():
        raise DistillscopeError("The reference texts have no tokens besides BOS.",
                                "Pass longer reference texts.")
    return acts[keep]


def centred_norm(h_ND: torch.Tensor) -> float:
    """sqrt(mean_t ||h_t - mean(h)||^2) over the rows of [N, D]: the typical length of a token's
    deviation from the mean residual (the root of the total variance)."""
    h_ND = h_ND.float()
    return float((h_ND - h_ND.mean(0)).pow(2).sum(-1).mean().sqrt())


def measure_typical_norm(teacher: Teacher, hook, texts: Sequence[str] = REFERENCE_TEXTS,
                         state: Optional[TaskState] = None, max_length: int = REFERENCE_MAX_LENGTH,
                         centred: bool = True) -> float:
    """The centred residual norm at `hook` (`centred_norm` over every non-BOS, non-pad token of
    `texts`): the yardstick steering strengths are measured in. `centred=False` gives the plain
    mean token norm instead, which the outlier dimensions dominate (for comparison)."""
    h = reference_residuals(teacher, hook, texts, state, max_length)
    return centred_norm(h) if centred else float(h.norm(dim=-1).mean())


def typical_norm(teacher: Teacher, hook, texts: Sequence[str] = REFERENCE_TEXTS,
                 state: Optional[TaskState] = None) -> float:
    """`measure_typical_norm`, cached per model object (weakly: a model that is freed drops its
    entries), hook and reference texts. `clear_norm_cache` after changing a model's weights."""
    hook = _as_hook(hook)
    key = ("centred", hook.name, tuple(texts), str(teacher.dtype))
    with _NORMS_LOCK:
        found = _NORMS.get(teacher.model, {}).get(key)
    if found is not None:
        return found
    value = measure_typical_norm(teacher, hook, texts, state)
    with _NORMS_LOCK:
        _NORMS.setdefault(teacher.model, {})[key] = value
    return value


def clear_norm_cache(model: Optional[torch.nn.Module] = None) -> None:
    with _NORMS_LOCK:
        if model is None:
            _NORMS.clear()
        else:
            _NORMS.pop(model, None)


# ---------------------------------------------------------------------------------------------
# Hooks


def _positions(kwargs: dict, hidden: torch.Tensor) -> Optional[torch.Tensor]:
    """Absolute positions of this pass's tokens, [B or 1, T], from the block's arguments: every
    decoder block in transformers 5 receives position_ids (KV-cached 1-token passes too)."""
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = kwargs.get("cache_position")
    if pos is None:
        return None
    pos = pos.to(hidden.device)
    if pos.ndim == 3:  # multimodal rotary (3, B, T): the text axis first
        pos = pos[0]
    if pos.ndim == 1:
        pos = pos.unsqueeze(0)
    return pos


class Steering:
    """Directions with strengths, added to the residual after their blocks while attached.

        with Steering(teacher, [(d1, 0.3), (d2, -0.2)]):
            teacher.model(input_ids)          # steered
        # hooks gone here, also after an error

    The added vector per block is computed once, at construction, from `typical_norm` (measured
    now, with no hooks attached, unless `norms` {hook name: norm} is given). A Steering can be
    entered any number of times, never twice at once."""

    def __init__(self, teacher: Teacher, terms: Iterable[tuple[Direction, float]],
                 norms: Optional[dict] = None, state: Optional[TaskState] = None,
                 texts: Sequence[str] = REFERENCE_TEXTS):
        self.teacher = teacher
        self.terms: list[tuple[Direction, float]] = []
        for direction, alpha in terms:
            if not isinstance(direction, Direction):
                raise TypeError(f"Expected a Direction, got {type(direction).__name__}.")
            alpha = float(alpha)
            if not math.isfinite(alpha):
                raise DistillscopeError(f"The strength of '{direction.name}' is {alpha}.",
                                        "Give a finite number.")
            direction.check_fits(teacher)
            self.terms.append((direction, alpha))
        self.norms: dict[str, float] = {}
        added: dict[int, torch.Tensor] = {}
        for direction, alpha in self.terms:
            hook = direction.hook.name
            if hook not in self.norms:
                given = (norms or {}).get(hook)
                self.norms[hook] = float(given) if given is not None else \
                    typical_norm(teacher, direction.hook, texts, state)
            vec = alpha * direction.gain * self.norms[hook] * direction.unit
            layer = direction.hook.layer
            added[layer] = added[layer] + vec if layer in added else vec
        # [D] per block, on the model's device and dtype
        self.added = {layer: v.to(teacher.device, teacher.dtype) for layer, v in sorted(added.items())}
        self._handles: list = []
        self._lock = threading.Lock()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _hook(self, layer: int):
        vec = self.added[layer]

        def add(module, args, kwargs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            v = vec.to(hidden.dtype)
            pos = _positions(kwargs, hidden)
            if pos is None:  # no positions given: the pass is taken to start the sequence
                pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            keep = (pos != 0).unsqueeze(-1).to(hidden.dtype)  # [B or 1, T, 1]: BOS gets nothing
            steered = hidden + keep * v
            if isinstance(output, tuple):
                return (steered,) + tuple(output[1:])
            if isinstance(output, list):
                return [steered] + list(output[1:])
            return steered

        return add

    def attach(self) -> None:
        with self._lock:
            if self._handles:
                raise RuntimeError("This Steering is already attached.")
            layers = self.teacher.layers
            try:
                for layer in self.added:
                    # first in line, so every other hook on the block (capture, transformers'
                    # output_hidden_states recorder) sees the steered residual
                    self._handles.append(layers[layer].register_forward_hook(
                        self._hook(layer), with_kwargs=True, prepend=True))
            except BaseException:
                self._detach_locked()
                raise

    def detach(self) -> None:
        with self._lock:
            self._detach_locked()

    def _detach_locked(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "Steering":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


@contextlib.contextmanager
def steer(teacher: Teacher, terms: Iterable[tuple[Direction, float]], **kw) -> Iterator[Steering]:
    """`with steer(teacher, [(direction, alpha), ...]):` forward passes inside are steered."""
    steering = Steering(teacher, terms, **kw)
    with steering:
        yield steering


# ---------------------------------------------------------------------------------------------
# Generation


def eos_ids(teacher: Teacher) -> set[int]:
    """Token ids that end a generation: the tokenizer's EOS and the generation config's."""
    ids = set()
    tok_eos = getattr(teacher.tokenizer, "eos_token_id", None)
    if tok_eos is not None:
        ids.add(int(tok_eos))
    gen = getattr(teacher.model, "generation_config", None)
    cfg_eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if cfg_eos is not None:
        ids.update(int(i) for i in (cfg_eos if isinstance(cfg_eos, (list, tuple)) else [cfg_eos]))
    return ids


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def generate_tokens(teacher: Teacher, prompt_ids: Sequence[int],
                    terms: Iterable[tuple[Direction, float]] = (), max_new_tokens: int = 40,
                    temperature: float = 0.0, seed: Optional[int] = None,
                    state: Optional[TaskState] = None, steering: Optional[Steering] = None,
                    stop_at_eos: bool = True) -> Iterator[int]:
    """Yield each new token id, steered by `terms` (or a ready `steering`), with the KV cache.

    Greedy when temperature is 0 (the default: base and steered runs are then comparable
    token by token); otherwise sampled from softmax(logits / temperature) with a generator
    seeded by `seed` (0 when None). Cancellation is checked before every token (core.errors.
    Cancelled). Hooks are attached only inside each forward pass, so nothing is left on the
    model while the consumer holds a suspended stream, nor after it ends in any way."""
    if max_new_tokens < 0:
        raise DistillscopeError(f"max_new_tokens is {max_new_tokens}.", "Give 0 or more.")
    if temperature < 0 or not math.isfinite(temperature):
        raise DistillscopeError(f"The temperature is {temperature}.", "Give 0 (greedy) or more.")
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise DistillscopeError("The prompt has no tokens.", "Type a prompt.")
    if steering is None:
        steering = Steering(teacher, terms, state=state)  # measures norms before any hook exists
    elif list(terms):
        raise ValueError("Pass either terms or a steering, not both.")
    model = teacher.model
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    stop = eos_ids(teacher) if stop_at_eos else set()
    gen = None
    if temperature > 0:
        gen = torch.Generator(device=teacher.device).manual_seed(0 if seed is None else int(seed))
    inputs = torch.tensor([prompt_ids], dtype=torch.long, device=teacher.device)
    past = None
    try:
        for step in range(max_new_tokens):
            if state is not None:
                state.check_cancelled()
                state.report(step, max_new_tokens, "Generating")
            # no_grad and the hooks are held for the forward only, never across a yield
            with torch.no_grad(), steering:
                out = model(input_ids=inputs, past_key_values=past, use_cache=True, **extra)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            if gen is None:
                token = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=gen))
            if token in stop:
                return
            yield token
            inputs = torch.tensor([[token]], dtype=torch.long, device=teacher.device)
        if state is not None:
            state.report(max_new_tokens, max_new_tokens, "Generated")
    finally:
        steering.detach()  # already detached after every pass; cheap insurance


def generate_stream(teacher: Teacher, prompt: str, terms: Iterable[tuple[Direction, float]] = (),
                    max_new_tokens: int = 40, temperature: float = 0.0, seed: Optional[int] = None,
                    state: Optional[TaskState] = None, steering: Optional[Steering] = None,
                    max_prompt_tokens: int = 2048, token_ids: Optional[list] = None) -> Iterator[str]:
    """Yield the text of each new token as it is produced (see `generate_tokens`).

    Pieces are differences of the decoded prompt + continuation, so spacing is as in the full
    text; a piece that would end inside a multi-byte character waits for the next token. The
    pieces concatenate to the decoded continuation. A list passed as `token_ids` receives each
    new token id as it is made."""
    prompt_ids = teacher.tokenize([prompt], max_prompt_tokens)[0]
    with teacher.tokenizer_lock:
        prefix = teacher.tokenizer.decode(prompt_ids, skip_special_tokens=True)
    ids = list(prompt_ids)
    emitted = ""
    for token in generate_tokens(teacher, prompt_ids, terms, max_new_tokens, temperature, seed,
                                 state, steering):
        ids.append(token)
        if token_ids is not None:
            token_ids.append(token)
        with teacher.tokenizer_lock:
            text = teacher.tokenizer.decode(ids, skip_special_tokens=True)
        if not text.startswith(prefix):
            continue  # the prompt's own text changed with the new token (rare); wait
        text = text[len(prefix):]
        if text.endswith("\ufffd") or not text.startswith(emitted):
            continue  # a character split across tokens, or a re-merge: wait for more
        piece, emitted = text[len(emitted):], text
        if piece:
            yield piece
    with teacher.tokenizer_lock:
        text = teacher.tokenizer.decode(ids, skip_special_tokens=True)
    tail = text[len(prefix):] if text.startswith(prefix) else ""
    if tail.startswith(emitted) and len(tail) > len(emitted):
        yield tail[len(emitted):]


def generate_text(teacher: Teacher, prompt: str, terms: Iterable[tuple[Direction, float]] = (),
                  **kw) -> str:
    """The whole continuation at once (`generate_stream` joined)."""
    return "".join(generate_stream(teacher, prompt, terms, **kw))


# ---------------------------------------------------------------------------------------------
# Where a direction comes from, and presets of slider settings

SOURCE_KINDS = ("feature", "contrast", "crosscoder", "file")
APPLY_TO = ("both", "base", "variant")  # which models of a pair a preset's direction steers
PRESET_FORMAT = "distillscope-steering-preset/1"
PRESET_MAX_BYTES = 1_000_000


def _field(source: dict, key: str, kind: type, what: str):
    value = source.get(key)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and bool(value)
    if not ok:
        raise DistillscopeError(f"A {source.get('kind')} direction needs '{key}' ({what}); got {value!r}.",
                                "Add the direction again from the app, or fix the preset.")
    return value


OWN_DECODER = "own"  # a crosscoder source's "decoder": each model its own row
ROLES = {"base": 0, "variant": 1}


def crosscoder_direction(cc, latent: int, model, own: bool = False, crosscoder_name: str = "",
                         name: Optional[str] = None) -> Direction:
    """Latent `latent` of a crosscoder as a Direction for model `model` (index or name): that
    model's decoder row in its own units, at the crosscoder's hook.

    own=False: the row alone (gain 1: a strength means the same as for any direction).
    own=True: the latent steering each model with its own row, keeping their proportion: the
    gain is this row's norm over the larger of the two rows' norms (in the crosscoder's
    normalized space, where they compare), so at one strength a variant-only latent
    (rel ~ 1) moves the variant by alpha typical norms and the base by (1 - rel) / rel of that,
    next to nothing. A row that is exactly zero steers with gain 0."""
    from core.crosscoder import relative_norms

    m = cc.model_index(model)
    try:
        latent = int(latent)
    except (TypeError, ValueError):
        raise DistillscopeError(f"Latent '{latent}' is not a number.", "Give the latent's index.")
    if not 0 <= latent < cc.cfg.d_latent:
        raise DistillscopeError(f"Latent {latent} does not exist; the crosscoder has latents 0 to "
                                f"{cc.cfg.d_latent - 1}.", "Pick an index in that range.")
    if not cc.cfg.hook:
        raise DistillscopeError("The crosscoder does not record its hook.",
                                "Train it again with a hook, or save the row as a vector file.")
    model_name = cc.cfg.model_names[m]
    rows = cc.decoder_directions(m)  # [F, D], model m's units
    norms = cc.W_dec.detach()[latent].float().norm(dim=-1)  # [M], normalized space
    rel = float(relative_norms(cc)[latent])
    where = f"crosscoder {crosscoder_name}, " if crosscoder_name else "crosscoder "
    vector, gain = rows[latent], 1.0
    if own:
        top = float(norms.max())
        gain = float(norms[m]) / top if top > 0 else 0.0
        if float(vector.norm()) == 0.0:  # no row for this model: any direction, nothing added
            vector, gain = cc.decoder_directions(int(norms.argmax()))[latent], 0.0
        what = (f"{where}latent {latent}, {model_name}'s own decoder row, {gain:.2f} of the larger row "
                f"(relative decoder norm {rel:.2f}), {cc.cfg.hook}")
        label = name or f"latent {latent} (own rows)"
    else:
        what = (f"{where}latent {latent}, {model_name}'s decoder row (relative decoder norm {rel:.2f}), "
                f"{cc.cfg.hook}")
        label = name or f"latent {latent} ({model_name} decoder)"
    return Direction(label, vector, _as_hook(cc.cfg.hook), what, gain)


def direction_from_source(source: dict, teacher: Optional[Teacher] = None,
                          saes: Optional[dict] = None, model=None) -> Direction:
    """A Direction from the plain description a preset stores:

        {"kind": "feature", "dictionary": DIR, "index": 285}        a dictionary feature's decoder row
        {"kind": "contrast", "path": FILE}                           a saved contrast, in raw units
        {"kind": "crosscoder", "folder": DIR, "latent": 7, "decoder": 1}   a crosscoder latent's
            decoder row for model 0 (base) or 1 (variant) (or a model name), in that model's units;
            "decoder": "own": each model its own row, in proportion (`crosscoder_direction`), the
            row of `model` ('base', 'variant', an index or a name), which must then be given
        {"kind": "file", "path": FILE, "hook": "resid_post.6"}       one vector (hook optional)

    An optional "name" names it. With a teacher, the direction is checked to fit it. `saes`
    ({dictionary path: loaded dictionary}) reuses dictionaries already loaded and keeps new ones."""
    if not isinstance(source, dict):
        raise DistillscopeError(f"A direction's source must be an object; got {type(source).__name__}.",
                                'e.g. {"kind": "feature", "dictionary": "DIR", "index": 12}')
    kind = source.get("kind")
    if kind not in SOURCE_KINDS:
        raise DistillscopeError(f"Unknown direction kind {kind!r}.", f"Use one of {', '.join(SOURCE_KINDS)}.")
    name = source.get("name") or None
    if name is not None and not isinstance(name, str):
        raise DistillscopeError(f"A direction's name must be text; got {name!r}.", "Fix the preset.")
    if kind == "feature":
        folder = _field(source, "dictionary", str, "the dictionary folder")
        index = _field(source, "index", int, "the feature's index")
        sae = (saes or {}).get(folder)
        if sae is None:
            from core.dictionaries import load

            sae = load(folder)
            if saes is not None:
                saes[folder] = sae
        direction = Direction.from_feature(sae, index, teacher, name=name, dictionary=Path(folder).name)
    elif kind == "contrast":
        from core.contrast import ContrastVector

        direction = Direction.from_contrast(ContrastVector.load(_field(source, "path", str, "the contrast file")),
                                            name=name)
    elif kind == "crosscoder":
        from core.crosscoder import Crosscoder

        folder = _field(source, "folder", str, "the crosscoder folder")
        latent = _field(source, "latent", int, "the latent's index")
        decoder = source.get("decoder", 1)
        cc = Crosscoder.load(folder)
        if decoder == OWN_DECODER:
            if model is None:
                raise DistillscopeError(f"Latent {latent} steers each model with its own decoder row; "
                                        "say which model this direction is for.",
                                        "Pass model='base' or 'variant' (or the model's name).")
            direction = crosscoder_direction(cc, latent, ROLES.get(model, model), own=True,
                                             crosscoder_name=Path(folder).name, name=name)
        else:
            direction = crosscoder_direction(cc, latent, decoder, crosscoder_name=Path(folder).name, name=name)
    else:
        path = _field(source, "path", str, "the vector file")
        hook = source.get("hook") or None
        direction = Direction.from_file(path, hook=hook, name=name)
    if teacher is not None:
        direction.check_fits(teacher)
    return direction


@dataclass
class PresetDirection:
    """One slider of a preset: where its direction comes from, its strength, whom it steers."""

    source: dict
    alpha: float = 0.0
    name: str = ""
    apply_to: str = "both"

    def to_json(self) -> dict:
        return {"source": dict(self.source), "alpha": self.alpha, "name": self.name, "apply_to": self.apply_to}


@dataclass
class SteeringPreset:
    """Slider settings: the prompt, the models, the directions with their strengths, and how to
    generate. Saved as JSON (PRESET_FORMAT); `load` says exactly what is wrong with a bad file."""

    prompt: str = ""
    directions: list = field(default_factory=list)  # [PresetDirection]
    base: str = "bundled"  # where the base model was loaded from
    variant: str = ""  # the variant's folder, or "" for none
    max_new_tokens: int = 40
    temperature: float = 0.0
    seed: int = 0

    def to_json(self) -> dict:
        return {"format": PRESET_FORMAT, "prompt": self.prompt, "base": self.base, "variant": self.variant,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed,
                "directions": [d.to_json() for d in self.directions]}

    def save(self, path) -> Path:
        import json

        from core.paths import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return Path(path)

    @classmethod
    def from_json(cls, data, where: str = "The preset") -> "SteeringPreset":
        def bad(what: str, hint: str = "Save the preset again from the Steering tab.") -> DistillscopeError:
            return DistillscopeError(f"{where} {what}", hint)

        if not isinstance(data, dict):
            raise bad(f"is not a JSON object (it holds {type(data).__name__}).")
        if data.get("format") != PRESET_FORMAT:
            raise bad(f"is not a steering preset (format {data.get('format')!r}, expected '{PRESET_FORMAT}').")
        prompt = data.get("prompt", "")
        if not isinstance(prompt, str):
            raise bad(f"has a prompt that is not text ({prompt!r}).")
        for key in ("base", "variant"):
            if not isinstance(data.get(key, ""), str):
                raise bad(f"has a '{key}' that is not a path ({data.get(key)!r}).")
        n = data.get("max_new_tokens", 40)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4096:
            raise bad(f"has max_new_tokens {n!r}; it must be a whole number from 1 to 4096.")
        temperature = data.get("temperature", 0.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                not math.isfinite(temperature) or temperature < 0:
            raise bad(f"has temperature {temperature!r}; it must be 0 (greedy) or more.")
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise bad(f"has seed {seed!r}; it must be a whole number.")
        items = data.get("directions", [])
        if not isinstance(items, list):
            raise bad(f"has 'directions' that is not a list ({type(items).__name__}).")
        directions = []
        for i, item in enumerate(items, start=1):
            if not isinstance(item, dict) or not isinstance(item.get("source"), dict):
                raise bad(f"has a direction {i} without a 'source' object.")
            kind = item["source"].get("kind")
            if kind not in SOURCE_KINDS:
                raise bad(f"has a direction {i} of unknown kind {kind!r}.", f"Use one of {', '.join(SOURCE_KINDS)}.")
            alpha = item.get("alpha", 0.0)
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
                raise bad(f"has a direction {i} whose strength is {alpha!r}, not a finite number.")
            apply_to = item.get("apply_to", "both")
            if apply_to not in APPLY_TO:
                raise bad(f"has a direction {i} that applies to {apply_to!r}.", f"Use one of {', '.join(APPLY_TO)}.")
            name = item.get("name", "")
            if not isinstance(name, str):
                raise bad(f"has a direction {i} whose name is not text ({name!r}).")
            directions.append(PresetDirection(dict(item["source"]), float(alpha), name, apply_to))
        return cls(prompt, directions, data.get("base") or "bundled", data.get("variant") or "", n,
                   float(temperature), seed)

    @classmethod
    def load(cls, path) -> "SteeringPreset":
        import json

        path = Path(path)
        hint = "Choose a preset saved from the Steering tab (a .json file)."
        if not path.is_file():
            raise DistillscopeError(f"The preset '{path}' does not exist.", hint)
        size = path.stat().st_size
        if size == 0:
            raise DistillscopeError(f"The preset '{path.name}' is empty.", hint)
        if size > PRESET_MAX_BYTES:
            raise DistillscopeError(f"'{path.name}' is {size:,} bytes, too large for a preset.", hint)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise DistillscopeError(f"The preset '{path.name}' is not UTF-8 text.", hint)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DistillscopeError(f"The preset '{path.name}' is not valid JSON (line {exc.lineno}, "
                                    f"column {exc.colno}: {exc.msg}).", hint)
        return cls.from_json(data, f"The preset '{path.name}'")
