"""Dictionaries in the field's formats, and whether one fits a teacher.

    sae = load_dictionary("path/to/sae")                         # SAELens folder
    sae = load_dictionary("layer_6/width_16k/params.npz", hook="resid_post.6")   # Gemma Scope
    check_fits(sae, teacher)                                     # or a DictionaryError saying why not

Formats read:
- SAELens folders, `cfg.json` + `sae_weights.safetensors` (SAE.load in base.py): what sae-lens
  6 writes for standard, topk, jumprelu and batchtopk SAEs (inference and training saves),
  older sae-lens folders, and ours.
- Gemma Scope parameter files: `params.npz` (Gemma Scope, Gemma 2; read with numpy and
  allow_pickle=False) or `params.safetensors` (Gemma Scope 2, Gemma 3) holding W_enc
  [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec and threshold (any letter case), a JumpReLU
  that does not subtract b_dec from its input. The files do not say where in the model the
  activations come from, so `hook` is needed (a Gemma Scope 2 `config.json` beside the file
  supplies it when present).

Pickle-based files (.pt, .pth, .bin, .ckpt, .pkl) are refused: loading them can run code.

Hook names: ours are KIND.LAYER (resid_post.6, mlp_in.6, mlp_out.6; see core.models.HookPoint).
Files from elsewhere name hooks as TransformerLens does (blocks.6.hook_resid_post) or by Hugging
Face module (model.layers.6); `hook_from_field` maps the names that denote exactly one of ours.
TransformerLens' hook_mlp_out is left alone: on Gemma it is taken after the post-MLP norm,
where our mlp_out is the MLP's own output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Union

import torch

from core.dictionaries.base import (CFG_FILENAME, DTYPES, REGISTRY, SAE, WEIGHTS_FILENAME, DictionaryError,
                                    SAEConfig, dtype_name)

PARAM_FILENAMES = ("params.npz", "params.safetensors")
GEMMA_SCOPE_CONFIG = "config.json"  # Gemma Scope 2's sidecar (model name, Hugging Face hook point)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
HOOK_KINDS_HELP = ("distillscope reads resid_post.L (a block's output), mlp_in.L (the MLP's input, "
                   "after its norm) and mlp_out.L (the MLP's output, before any post-MLP norm)")

# ---------------------------------------------------------------------------------------------
# Hook names

_OURS = re.compile(r"^(resid_post|mlp_in|mlp_out)\.(\d+)$")
_FIELD_HOOKS = (
    # TransformerLens
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), "resid_post", 0),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), "resid_post", -1),  # block L's input = block L-1's output
    (re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$"), "mlp_in", 0),
    # Hugging Face module paths (EleutherAI sparsify 'layers.6', Gemma Scope 2 'model.layers.6.output')
    (re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.output)?$"), "resid_post", 0),
    (re.compile(r"^(?:model\.)?layers\.(\d+)\.mlp(?:\.output)?$"), "mlp_out", 0),
    (re.compile(r"^(?:model\.)?layers\.(\d+)\.mlp\.input$"), "mlp_in", 0),
)
_TO_FIELD = {"resid_post": "blocks.{}.hook_resid_post", "mlp_in": "blocks.{}.ln2.hook_normalized"}


def hook_from_field(name: str) -> Optional[str]:
    """Our hook name (resid_post.6) for a hook name from a file, or None when it names no
    activation distillscope reads (attention, embeddings, a hook_mlp_out)."""
    name = str(name).strip()
    if _OURS.match(name):
        return name
    for pattern, kind, shift in _FIELD_HOOKS:
        m = pattern.match(name)
        if m and int(m.group(1)) + shift >= 0:
            return f"{kind}.{int(m.group(1)) + shift}"
    return None


def hook_to_field(name: str) -> str:
    """The TransformerLens name of one of our hooks where it denotes the same activations
    (resid_post, mlp_in), which is what SAELens users attach SAEs by; otherwise `name`."""
    m = _OURS.match(str(name))
    if m and m.group(1) in _TO_FIELD:
        return _TO_FIELD[m.group(1)].format(int(m.group(2)))
    return name


def _parse_hook(hook: str, path: Path) -> str:
    from core.models import HookPoint

    try:
        return HookPoint.parse(str(hook)).name
    except ValueError as exc:
        raise DictionaryError(f"The hook '{hook}' given for '{path}' is not one distillscope reads: {exc}",
                              f"{HOOK_KINDS_HELP}; e.g. hook='resid_post.6'.")


def resolve_hook(from_file: str, given: Optional[str], path: Path) -> str:
    """The hook a dictionary reads: the file's (already mapped by hook_from_field), or the one
    given. A given hook must agree with one the file names in a form we read; it replaces one
    we cannot read (the caller knows where that is in our terms)."""
    if given is None:
        return from_file
    ours = _parse_hook(given, path)
    if from_file and _OURS.match(from_file) and from_file != ours:
        raise DictionaryError(f"'{path}' says the dictionary reads {from_file}, not {ours}.",
                              f"Load it without hook=, or with hook='{from_file}'.")
    return ours


# ---------------------------------------------------------------------------------------------
# Loading


def load_dictionary(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                    hook: Optional[str] = None, dtype: Optional[Union[str, torch.dtype]] = None) -> SAE:
    """Load a dictionary from a SAELens folder or a Gemma Scope parameter file (or its folder),
    in eval mode. `hook` (e.g. 'resid_post.6') is required for parameter files, which do not
    record it; for SAELens folders it fills in or checks the hook. `dtype` converts the
    parameters (default: as stored). Every problem is a DictionaryError with a hint."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DictionaryError(f"'{path}' does not exist.", "Check the path: choose a folder with cfg.json and "
                              "sae_weights.safetensors, or a params.npz / .safetensors file.")
    if path.is_dir():
        if (path / CFG_FILENAME).is_file() or (path / WEIGHTS_FILENAME).is_file():
            return SAE.load(path, device=device, hook=hook, dtype=dtype)  # says what is missing
        for name in PARAM_FILENAMES:
            if (path / name).is_file():
                return load_params(path / name, hook=hook, device=device, dtype=dtype)
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise _pickle_error(path / pickles[0])
        raise DictionaryError(f"'{path}' holds no dictionary: no {CFG_FILENAME} + {WEIGHTS_FILENAME} "
                              f"(SAELens) and no {' or '.join(PARAM_FILENAMES)} (Gemma Scope).",
                              "Choose the folder that holds the dictionary's files.")
    if path.name == CFG_FILENAME or (path.name == WEIGHTS_FILENAME and (path.parent / CFG_FILENAME).is_file()):
        return SAE.load(path.parent, device=device, hook=hook, dtype=dtype)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".safetensors"):
        return load_params(path, hook=hook, device=device, dtype=dtype)
    if suffix in PICKLE_SUFFIXES or _looks_pickled(path):
        raise _pickle_error(path)
    raise DictionaryError(f"'{path}' is not a dictionary file distillscope reads.",
                          "Choose a SAELens folder (cfg.json + sae_weights.safetensors) or a Gemma Scope "
                          "params.npz / params.safetensors.")


def _looks_pickled(path: Path) -> bool:
    """A pickle (protocol 2+) or a torch.save zip, whatever the file is called."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or (head == b"PK\x03\x04" and path.suffix.lower() != ".npz")


def _pickle_error(path: Path) -> DictionaryError:
    return DictionaryError(
        f"'{path}' is a pickle-based file (torch.save / pickle), which distillscope does not open: "
        "loading one can run arbitrary code.",
        "Convert it where you trust it, e.g. `safetensors.torch.save_file(torch.load(path, weights_only=True), "
        "'params.safetensors')` with keys W_enc, W_dec, b_enc, b_dec, threshold, or save it "
        "with SAELens (cfg.json + sae_weights.safetensors).")


_PARAM_KEYS = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec",
               "threshold": "threshold", "log_threshold": "log_threshold"}
_TRANSCODER_KEYS = ("affine_skip_connection", "w_skip")


def load_params(path: Union[str, Path], hook: Optional[str] = None, device: Union[str, torch.device] = "cpu",
                dtype: Optional[Union[str, torch.dtype]] = None, model_name: str = "") -> SAE:
    """A Gemma Scope style parameter file (params.npz or a .safetensors file with W_enc, W_dec,
    b_enc, b_dec, threshold) as a JumpReLU SAE: f = ReLU(pre) where pre > threshold, with
    pre = x @ W_enc + b_enc (b_dec is not subtracted from the input) and x_hat = f @ W_dec + b_dec."""
    path = Path(path)
    sidecar = _gemma_scope_config(path)
    tensors = _read_params(path)
    hook_name = _params_hook(path, hook, sidecar)
    W_enc = tensors["W_enc"]
    if W_enc.ndim != 2:
        raise DictionaryError(f"W_enc in '{path}' has shape {list(W_enc.shape)}; it must be a matrix "
                              "[d_in, d_sae].", "The file is not an SAE parameter file.")
    d_in, d_sae = W_enc.shape
    W_dec = tensors["W_dec"]
    if tuple(W_dec.shape) != (d_sae, d_in):
        if W_dec.ndim == 2 and W_dec.shape[0] == d_sae:
            why = (f"it maps {d_sae} features to width {W_dec.shape[1]}, not back to the input width "
                   f"{d_in}: a transcoder, not an SAE")
        elif tuple(W_dec.shape) == (d_in, d_sae):
            why = "it is stored transposed"
        else:
            why = "the two do not describe one dictionary"
        raise DictionaryError(f"W_enc and W_dec in '{path}' do not fit: W_enc is {list(W_enc.shape)} "
                              f"[d_in, d_sae], so W_dec must be [{d_sae}, {d_in}], but it is "
                              f"{list(W_dec.shape)} ({why}).", "distillscope loads SAEs whose W_dec is "
                              "[d_sae, d_in]; convert the file or choose another dictionary.")
    stored = str(W_enc.dtype).replace("torch.", "")
    cfg = SAEConfig(d_in=int(d_in), d_sae=int(d_sae), architecture="jumprelu", apply_b_dec_to_input=False,
                    hook_name=hook_name, model_name=model_name or str(sidecar.get("model_name") or ""),
                    dtype=dtype_name(dtype) if dtype is not None else (stored if stored in DTYPES else "float32"))
    try:
        cfg.validate()
    except ValueError as exc:
        raise DictionaryError(f"'{path}' describes an SAE distillscope cannot hold: {exc}",
                              "Choose another dictionary.")
    sae = REGISTRY["jumprelu"](cfg)
    sae.fill(tensors, path, f"W_enc's shape [{d_in}, {d_sae}]",
             "A Gemma Scope parameter file holds W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc "
             "[d_sae], b_dec [d_in] and threshold [d_sae].")
    with torch.no_grad():
        for name in sae.expected_shapes():
            getattr(sae, name).copy_(tensors[name].to(getattr(sae, name).dtype))
    return sae.to(device).eval()


def _read_params(path: Path) -> dict[str, torch.Tensor]:
    """The file's arrays under their SAELens names; DictionaryError when it cannot be read or
    is not a JumpReLU parameter file."""
    if path.stat().st_size == 0:
        raise DictionaryError(f"'{path}' is empty.", "The download or copy was interrupted; fetch it again.")
    if path.suffix.lower() == ".npz":
        raw = _read_npz(path)
    else:
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types on bad headers
            raise DictionaryError(f"'{path}' cannot be read as safetensors ({exc}).",
                                  "The file is damaged or truncated; fetch it again.")
    tensors: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in raw.items():
        name = _PARAM_KEYS.get(key.lower())
        if key.lower() in _TRANSCODER_KEYS:
            raise DictionaryError(f"'{path}' holds '{key}': it is a transcoder with a skip connection, "
                                  "not an SAE.", "Choose an SAE (a residual-stream or MLP-output dictionary).")
        if name is None:
            unknown.append(key)
        else:
            tensors[name] = value
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").double().exp()
    tensors.pop("log_threshold", None)
    missing = [n for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if n not in tensors]
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(unknown)}"] if unknown else [])
        hint = ("A Gemma Scope parameter file holds W_enc, W_dec, b_enc, b_dec and threshold (a JumpReLU "
                "SAE).")
        if missing == ["threshold"] and not unknown:
            hint += (" Without a threshold it is not a JumpReLU, and without a cfg.json its architecture "
                     "is unknown: save it with SAELens (cfg.json + sae_weights.safetensors).")
        raise DictionaryError(f"'{path}' is not a JumpReLU parameter file: {'; '.join(parts)}.", hint)
    return tensors


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    import zipfile

    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:  # pickled content refused by allow_pickle=False
        if "pickle" in str(exc).lower():
            raise _pickle_error(path)
        raise DictionaryError(f"'{path}' cannot be read as a numpy archive ({exc}).",
                              "The file is damaged or truncated; fetch it again.")
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DictionaryError(f"'{path}' cannot be read as a numpy archive ({exc}).",
                              "The file is damaged or truncated; fetch it again.")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DictionaryError(f"'{path}' holds a single array, not an archive of named arrays.",
                              "A Gemma Scope params.npz holds W_enc, W_dec, b_enc, b_dec and threshold.")
    out = {}
    try:
        with archive:
            for key in archive.files:
                array = archive[key]
                if array.dtype.kind != "f":
                    raise DictionaryError(f"'{key}' in '{path}' holds {array.dtype} values, not "
                                          "floating-point numbers.", "The file is not an SAE parameter file.")
                out[key] = torch.from_numpy(np.ascontiguousarray(array))
    except ValueError as exc:  # an object array inside the archive
        if "pickle" in str(exc).lower():
            raise _pickle_error(path)
        raise DictionaryError(f"'{path}' cannot be read ({exc}).", "The file is damaged; fetch it again.")
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DictionaryError(f"'{path}' cannot be read ({exc.__class__.__name__}: {exc}).",
                              "The file is damaged or truncated; fetch it again.")
    return out


def _gemma_scope_config(path: Path) -> dict:
    """Gemma Scope 2's config.json beside the parameter file, if there is a readable one."""
    sidecar = path.parent / GEMMA_SCOPE_CONFIG
    try:
        data = json.loads(sidecar.read_text("utf-8")) if sidecar.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _params_hook(path: Path, hook: Optional[str], sidecar: dict) -> str:
    recorded = sidecar.get("hf_hook_point_in")
    from_file = (hook_from_field(recorded) or "") if isinstance(recorded, str) else ""
    if hook is not None:
        return resolve_hook(from_file, hook, path)
    if from_file:
        return from_file
    layer = re.search(r"layer_(\d+)", str(path))
    example = f"resid_post.{layer.group(1)}" if layer else "resid_post.6"
    raise DictionaryError(
        f"'{path}' does not say where in the model its activations come from (a Gemma Scope "
        "parameter file holds only the weights).",
        f"Give the hook it was trained on, e.g. load(path, hook='{example}')"
        + (f" (the path names layer {layer.group(1)})" if layer else "") + f"; {HOOK_KINDS_HELP}.")


# ---------------------------------------------------------------------------------------------
# Does it fit the teacher?


def hook_width(teacher, hook) -> int:
    """Width of the activations at `hook` (a HookPoint): d_model for every hook we read
    (mlp_in is the MLP's input after its norm, mlp_out its output, both d_model wide)."""
    return int(teacher.d_model)


def check_fits(sae: SAE, teacher):
    """The dictionary's HookPoint if it can read `teacher` there: a hook we read, a layer the
    teacher has, d_in equal to the teacher's width at that hook. Otherwise a DictionaryError
    saying what does not fit and what to do."""
    from core.models import HookPoint

    name = sae.cfg.hook_name or ""
    made_for = f"It was made for {sae.cfg.model_name}" if sae.cfg.model_name else "It was made for another model"
    teacher_name = getattr(teacher, "name", "the model")
    if not name:
        raise DictionaryError("The dictionary does not record where in the model it reads (its hook_name "
                              "is empty).", "Load it with the hook it was trained on, e.g. "
                              "load(path, hook='resid_post.6').")
    ours = hook_from_field(name)
    if ours is None:
        raise DictionaryError(f"The dictionary reads activations at '{name}', which distillscope cannot "
                              "hook.", f"{HOOK_KINDS_HELP}. If '{name}' is one of these, load it with "
                              "hook='KIND.LAYER'; otherwise choose another dictionary.")
    hook = HookPoint.parse(ours)
    n_layers = int(teacher.n_layers)
    if hook.layer >= n_layers:
        raise DictionaryError(f"The dictionary reads {hook.name}, but {teacher_name} has no layer {hook.layer} "
                              f"(its layers are 0 to {n_layers - 1}).",
                              f"{made_for}; load that model, or choose a dictionary trained on {teacher_name}.")
    width = hook_width(teacher, hook)
    if sae.d_in != width:
        raise DictionaryError(f"The dictionary reads {sae.d_in}-wide activations (d_in), but {teacher_name} "
                              f"is {width} wide at {hook.name}.",
                              f"{made_for}; load that model, or choose a dictionary trained on {teacher_name}.")
    return hook
