"""`distillscope steer`: the unsteered and the steered continuation of a prompt, streamed.
Registered by core.cli."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

from core.errors import DistillscopeError

NAME_FORMS = ("feature:INDEX (of the starter dictionary, or --dictionary DIR), contrast:NAME (a "
              "contrast saved from the app), or a .safetensors file holding one vector")


def add_parsers(sub) -> dict:
    p = sub.add_parser("steer", help="generate with directions added to the residual stream",
                       description="Prints the continuation of a prompt without and with steering: "
                                   "each direction's unit vector, times ALPHA times the typical "
                                   "residual norm at its layer, is added to every token but BOS "
                                   "after that layer. The typical norm is centred: the root mean "
                                   "squared distance of a token's residual from the mean residual, "
                                   "over the non-BOS tokens of a few reference texts (a few huge, "
                                   "constant dimensions of the residual do not count). Greedy "
                                   "unless --temperature or --seed is given.")
    p.add_argument("--prompt", default=None, help="the text to continue (required unless a --preset has one)")
    p.add_argument("--preset", metavar="FILE", default=None,
                   help="a preset saved from the app's Steering tab: its prompt, base model, generation "
                        "settings and the directions that steer the base, with their strengths; --prompt, "
                        "--model and the settings given here replace the preset's, --direction adds to them")
    p.add_argument("--direction", action="append", default=[], metavar="NAME=ALPHA",
                   help=f"a direction and its strength (repeatable). NAME is {NAME_FORMS}. "
                        "ALPHA 1 adds a vector as long as tokens typically differ from the mean "
                        "residual; on the bundled teacher a dictionary feature steers fluently at "
                        "0.1 to 0.4 and turns to gibberish from about 1 (a contrast sooner); "
                        "negative pushes the other way")
    p.add_argument("--model", default=None,
                   help="'bundled' (the default), a Hugging Face folder or a .gguf file")
    p.add_argument("--dictionary", metavar="DIR", default=None,
                   help="the dictionary feature:INDEX refers to (default: the starter dictionary)")
    p.add_argument("--hook", default=None, metavar="resid_post.L",
                   help="the layer of vector files that do not record it (feature and contrast "
                        "directions bring their own; a different --hook is an error)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default 40)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sample at this temperature (default: greedy; 1.0 when only --seed is given)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (both runs use it)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    return {"steer": cmd_steer}


def parse_direction_arg(text: str) -> tuple[str, float]:
    """'NAME=ALPHA' -> (NAME, ALPHA), or a DistillscopeError saying what is wrong."""
    name, sep, alpha_text = str(text).rpartition("=")
    if not sep or not name.strip():
        raise DistillscopeError(f"--direction '{text}' is not NAME=ALPHA.",
                                f"e.g. --direction feature:123=0.3. NAME is {NAME_FORMS}.")
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise DistillscopeError(f"The strength in --direction '{text}' ('{alpha_text}') is not a number.",
                                "e.g. --direction feature:123=0.3 or contrast:formal=-0.2")
    if not math.isfinite(alpha):
        raise DistillscopeError(f"The strength in --direction '{text}' is not finite.", "Give a number.")
    return name.strip(), alpha


def _saved_contrast_path(name: str) -> Path:
    from core.contrast import SUFFIX, _file_stem, contrasts_dir, list_contrasts

    saved = list_contrasts()
    for path in saved:
        stem = path.name[: -len(SUFFIX)]
        if stem in (name, _file_stem(name)):
            return path
    for path in saved:  # by the name inside the file
        try:
            from core.contrast import ContrastVector
            if ContrastVector.load(path).name == name:
                return path
        except DistillscopeError:
            continue
    names = ", ".join(p.name[: -len(SUFFIX)] for p in saved[:20]) or "none yet"
    raise DistillscopeError(f"There is no saved contrast called '{name}' in {contrasts_dir()} "
                            f"(saved: {names}).",
                            "Save one from the Contrast tab, or give a .contrast.safetensors file path.")


def resolve_direction(name: str, teacher, hook: Optional[str] = None, dictionary: Optional[str] = None,
                      _sae_cache: Optional[dict] = None):
    """The Direction a CLI NAME refers to (see NAME_FORMS), checked against the teacher."""
    from core.contrast import ContrastVector
    from core.steering import Direction, _as_hook

    hook_given = _as_hook(hook) if hook else None
    kind, colon, rest = name.partition(":")
    if colon and kind == "feature":
        if not rest.strip().lstrip("-").isdigit():
            raise DistillscopeError(f"'{name}': the feature index '{rest}' is not a whole number.",
                                    "e.g. feature:123")
        from core.cli import _open_dictionary

        cache = _sae_cache if _sae_cache is not None else {}
        if "sae" not in cache:
            cache["folder"], cache["sae"] = _open_dictionary(dictionary)
        direction = Direction.from_feature(cache["sae"], int(rest), teacher, name=name,
                                           dictionary=str(cache["folder"]))
    elif colon and kind == "contrast":
        path = Path(rest)
        path = path if path.is_file() else _saved_contrast_path(rest)
        direction = Direction.from_contrast(ContrastVector.load(path), name=name)
    elif name.endswith(".safetensors"):
        if not Path(name).is_file():
            raise DistillscopeError(f"'{name}' does not exist.", "Give the path of a .safetensors file.")
        direction = Direction.from_file(name, hook=hook_given, name=Path(name).name)
    else:
        raise DistillscopeError(f"'{name}' is not a direction name.", f"NAME is {NAME_FORMS}.")
    if hook_given is not None and direction.hook != hook_given:
        raise DistillscopeError(f"'{name}' is at {direction.hook.name}, but --hook says {hook_given.name}.",
                                f"Leave out --hook, or give --hook {direction.hook.name}.")
    direction.check_fits(teacher)
    return direction


def _stream(label: str, pieces) -> float:
    """Print a labelled stream as it comes; the seconds it took."""
    print(f"{label}: ", end="", flush=True)
    start = time.monotonic()
    for piece in pieces:
        print(piece, end="", flush=True)
    print(flush=True)
    return time.monotonic() - start


def cmd_steer(args) -> int:
    from core.models import load_teacher
    from core.progress import TaskState
    from core.steering import Steering, SteeringPreset, direction_from_source, generate_stream

    # Everything that can be checked without the model first: no model load wasted.
    preset = SteeringPreset.load(args.preset) if args.preset else None
    terms_text = [parse_direction_arg(t) for t in args.direction]
    prompt = args.prompt if args.prompt is not None else (preset.prompt if preset is not None else "")
    if not prompt:
        raise DistillscopeError("There is no prompt to continue.", "Give --prompt TEXT (or a --preset that has one).")
    from_preset = [d for d in preset.directions if d.apply_to in ("both", "base")] if preset is not None else []
    if not terms_text and not from_preset:
        raise DistillscopeError("There is no direction to steer with.",
                                f"Give --direction NAME=ALPHA (NAME is {NAME_FORMS}), or a --preset with directions.")
    max_new_tokens = args.max_new_tokens if args.max_new_tokens is not None else \
        (preset.max_new_tokens if preset is not None else 40)
    if max_new_tokens < 1:
        raise DistillscopeError("--max-new-tokens must be at least 1.", "e.g. --max-new-tokens 40")
    seed = args.seed if args.seed is not None else (preset.seed if preset is not None and preset.temperature > 0 else None)
    if args.temperature is not None:
        temperature = args.temperature
    elif preset is not None and args.seed is None:
        temperature = preset.temperature
    else:
        temperature = 1.0 if args.seed is not None else 0.0
    if temperature < 0 or not math.isfinite(temperature):
        raise DistillscopeError("--temperature must be 0 (greedy) or more.", "e.g. --temperature 0.8")
    model = args.model or (preset.base if preset is not None else "bundled")
    if preset is not None and preset.variant:
        print(f"(the preset's variant {preset.variant} is not run here; steer it with --model {preset.variant})",
              file=sys.stderr)
    state = TaskState()
    start = time.monotonic()
    teacher = load_teacher(model, device=args.device, state=state)
    print(f"{teacher.name} loaded in {time.monotonic() - start:.1f} s", file=sys.stderr)
    sae_cache: dict = {}
    # the base's row of a crosscoder latent that steers each model with its own
    terms = [(direction_from_source(dict(d.source, name=d.name or d.source.get("name")), teacher, sae_cache,
                                    model="base"), d.alpha) for d in from_preset]
    terms += [(resolve_direction(name, teacher, args.hook, args.dictionary, sae_cache), alpha)
              for name, alpha in terms_text]
    steering = Steering(teacher, terms, state=state)  # measures the typical norms (no hooks yet)
    for direction, alpha in terms:
        hook = direction.hook.name
        gain = f"{direction.gain:.3g} x " if direction.gain != 1 else ""
        print(f"  {direction.name} = {alpha:g}: {direction.source}; adds {alpha:g} x {gain}"
              f"{steering.norms[hook]:.1f} (typical residual norm at {hook}: centred, BOS excluded)", file=sys.stderr)
    mode = "greedy" if temperature == 0 else f"sampling at temperature {temperature:g}, seed {seed or 0}"
    print(f"({mode}, at most {max_new_tokens} new tokens)", file=sys.stderr)
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, state=state)
    base_ids: list = []
    steered_ids: list = []
    label = "steered [" + ", ".join(f"{d.name}={a:g}" for d, a in terms[:len(from_preset)]) \
        + (", " if from_preset and terms_text else "") + ", ".join(f"{n}={a:g}" for n, a in terms_text) + "]"
    try:
        print(f"prompt: {prompt}")
        base_s = _stream("base", generate_stream(teacher, prompt, token_ids=base_ids, **kw))
        steered_s = _stream(label, generate_stream(teacher, prompt, steering=steering,
                                                   token_ids=steered_ids, **kw))
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        return 130
    print(f"base: {len(base_ids)} tokens in {base_s:.1f} s ({len(base_ids) / max(base_s, 1e-9):.1f} tok/s); "
          f"steered: {len(steered_ids)} tokens in {steered_s:.1f} s "
          f"({len(steered_ids) / max(steered_s, 1e-9):.1f} tok/s)", file=sys.stderr)
    return 0
