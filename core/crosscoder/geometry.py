"""The parallelogram test on analogy quadruples (seed 003, figures 4 and 5): how well each
model's representations of a : b :: c : d form parallelograms, base against variant.

    quads = load_quadruples()                          # bundled set, or load_quadruples("my.tsv")
    result = geometry({"base": base, "variant": variant}, "resid_post.9", quads)
    result.curve("variant", "capital")                 # cumulative fraction vs parallelogram loss
    result.summary()                                   # per model and class: median loss, ...

Definitions (the seed's text gives only figure captions, no formula, so these are ours):

- A word's representation is the model's residual at the hook (`resid_post.L`, the output of
  block L) at the word's last token, with the word on its own after BOS, preceded by a space
  (template " {word}": the form a word takes inside a sentence; every word of the bundled set is
  then a single token of the bundled teacher's tokenizer, while six of them split without the
  space). `reduce="mean"` averages over the word's tokens instead, and `template` puts the word
  in a short context; the template must end with "{word}", so the word's tokens are the last ones.
- Parallelogram loss of a quadruple, with u = b - a and v = d - c:

      loss(a, b, c, d) = ||u - v|| / ((||u|| + ||v||) / 2)

  0 for an exact parallelogram (b - a = d - c); at most 2 (u = -v); unchanged by scaling,
  rotating or translating all four vectors, so models with different residual norms compare
  fairly. NaN when u = v = 0 (four copies of one point).
- Figure 5 (PCA into 2D): the four vectors are first projected onto 2 principal components,
  then the same loss is taken in the plane. `pca="class"` fits the components on all words of the
  quadruple's function class (default: one plane per class, as a plot of a class shows it);
  `pca="quadruple"` fits them on the quadruple's own four points. An orthogonal projection
  never lengthens u - v or the sides, so for points already in a plane the loss is unchanged.
- Figure 4: the cumulative fraction of quadruples whose loss is at most x, as a step curve per
  model and class (`cumulative_curve`): monotone, ending at 1. A curve further left means more
  parallelogram-like (more structured) representations.

Quadruple files: .jsonl lines {"class": ..., "a": ..., "b": ..., "c": ..., "d": ...} ("function"
is accepted for "class"; a missing class is "custom"), or .csv / .tsv with a header row naming
the columns a, b, c, d and optionally class. A malformed row is an error naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from core.errors import DistillscopeError
from core.models import HookPoint, Teacher, capture
from core.paths import resources_dir
from core.progress import TaskState

DEFAULT_TEMPLATE = " {word}"
REDUCTIONS = ("last", "mean")
PCA_MODES = ("class", "quadruple", "none")
MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)


class GeometryError(DistillscopeError):
    """A quadruple file or a geometry setting is invalid."""


def bundled_quadruples_path() -> Path:
    return resources_dir() / "analogies" / "quadruples.jsonl"


@dataclass(frozen=True)
class Quadruple:
    """a : b :: c : d in one function class; `source` is 'file:line'."""

    a: str
    b: str
    c: str
    d: str
    function: str = "custom"
    source: str = ""

    @property
    def words(self) -> tuple[str, str, str, str]:
        return (self.a, self.b, self.c, self.d)


# ---------------------------------------------------------------------------------------------
# Files


def load_quadruples(path: Union[str, Path, None] = None) -> list[Quadruple]:
    """Quadruples from a .jsonl, .csv or .tsv file (None: the bundled set). Every problem is a
    GeometryError naming the file, the line and what to do."""
    path = Path(path) if path is not None else bundled_quadruples_path()
    hint = ("Each row needs four words a, b, c, d (a : b :: c : d) and may name its function class: "
            "JSONL {\"class\": \"capital\", \"a\": \"France\", \"b\": \"Paris\", \"c\": \"Japan\", "
            "\"d\": \"Tokyo\"}, or CSV/TSV with a header row class,a,b,c,d.")
    if not path.exists():
        raise GeometryError(f"The quadruple file '{path}' does not exist.", "Check the path.")
    if path.is_dir():
        raise GeometryError(f"'{path}' is a folder, not a quadruple file.", "Give a .jsonl, .csv or .tsv file.")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".tsv"):
        raise GeometryError(f"'{path.name}' is not a .jsonl, .csv or .tsv file.", hint)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise GeometryError(f"'{path}' is {size / 2**20:.0f} MB; quadruple files are small.",
                            f"Use a file under {MAX_FILE_BYTES // 2**20} MB.")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GeometryError(f"'{path}' is a binary file, not text.", hint)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise GeometryError(f"'{path}' is not UTF-8 text (first bad byte on line {line}).",
                            "Save the file as UTF-8.")
    quads = _parse_jsonl(text, path, hint) if suffix == ".jsonl" else _parse_table(text, path, suffix, hint)
    if not quads:
        raise GeometryError(f"'{path}' holds no quadruples.", hint)
    return quads


def _word(value, name: str, where: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if value is None else f"{value!r}"
        raise GeometryError(f"{where}: '{name}' is {shown}; it must be a non-empty word.", hint)
    if "\n" in value or len(value) > 200:
        raise GeometryError(f"{where}: '{name}' is not a word or short phrase ({value[:40]!r}...).", hint)
    return value.strip()


def _row(values: dict, where: str, hint: str) -> Quadruple:
    words = [_word(values.get(k), k, where, hint) for k in "abcd"]
    function = values.get("class", values.get("function"))
    if function is None or (isinstance(function, str) and not function.strip()):
        function = "custom"
    if not isinstance(function, str):
        raise GeometryError(f"{where}: 'class' must be text, not {function!r}.", hint)
    return Quadruple(*words, function=function.strip(), source=where)


def _parse_jsonl(text: str, path: Path, hint: str) -> list[Quadruple]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GeometryError(f"{where} is not valid JSON ({exc.msg}).", hint)
        if isinstance(obj, list) and len(obj) in (4, 5):  # ["a", "b", "c", "d"] or [..., "class"]
            obj = dict(zip(("a", "b", "c", "d", "class"), obj))
        if not isinstance(obj, dict):
            raise GeometryError(f"{where} holds {type(obj).__name__}, not a JSON object.", hint)
        out.append(_row(obj, where, hint))
    return out


def _parse_table(text: str, path: Path, suffix: str, hint: str) -> list[Quadruple]:
    delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    out, header = [], None
    try:
        for row in reader:
            n = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                if "function" in header and "class" not in header:
                    header = ["class" if h == "function" else h for h in header]
                missing = [k for k in "abcd" if k not in header]
                if missing:
                    raise GeometryError(f"{path}:{n}: the header row {row!r} lacks the column(s) "
                                        f"{', '.join(missing)}.", hint)
                continue
            if len(row) != len(header):
                raise GeometryError(f"{path}:{n} has {len(row)} columns; the header has {len(header)}.",
                                    hint + (" In a .tsv file, separate columns by tabs." if suffix == ".tsv" else ""))
            out.append(_row(dict(zip(header, row)), f"{path}:{n}", hint))
    except csv.Error as exc:
        raise GeometryError(f"{path}:{reader.line_num} cannot be parsed ({exc}).", hint)
    return out


# ---------------------------------------------------------------------------------------------
# The loss, PCA, curves


def parallelogram_loss(a, b, c, d) -> torch.Tensor:
    """||(b - a) - (d - c)|| / ((||b - a|| + ||d - c||) / 2) over the last axis (float64; NaN
    when both sides are zero). Inputs [..., D], tensors or arrays."""
    a, b, c, d = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b, c, d))
    u, v = b - a, d - c
    den = (u.norm(dim=-1) + v.norm(dim=-1)) / 2
    num = (u - v).norm(dim=-1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(den, float("nan")))


def pca_2d(X) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(projection [N, 2], components [2, D], mean [D], explained variance fraction) of points
    X [N, D] (float64). With fewer than 2 directions of variance the missing component is zero."""
    X = torch.as_tensor(X, dtype=torch.float64)
    if X.dim() != 2 or X.shape[0] < 1:
        raise GeometryError(f"PCA needs points [N, D]; got shape {list(X.shape)}.", "")
    mean = X.mean(0)
    Xc = X - mean
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    comps = torch.zeros(2, X.shape[1], dtype=torch.float64)
    k = min(2, Vh.shape[0])
    comps[:k] = Vh[:k]
    total = float(S.pow(2).sum())
    explained = float(S[:k].pow(2).sum()) / total if total > 0 else 1.0
    return Xc @ comps.T, comps, mean, explained


def cumulative_curve(losses) -> dict:
    """Figure 4's curve: {'loss': sorted finite losses, 'fraction': (i + 1) / n}. Monotone
    non-decreasing in both, ending at fraction 1 (empty lists when there is no finite loss)."""
    v = np.sort(np.asarray(losses, dtype=np.float64)[np.isfinite(np.asarray(losses, dtype=np.float64))])
    n = v.size
    return {"loss": v.tolist(), "fraction": (np.arange(1, n + 1) / n).tolist() if n else []}


def fraction_below(losses, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[float]:
    """The cumulative fraction at each threshold: share of finite losses <= t."""
    v = np.asarray(losses, dtype=np.float64)
    v = v[np.isfinite(v)]
    return [float((v <= t).mean()) if v.size else float("nan") for t in thresholds]


# ---------------------------------------------------------------------------------------------
# Representations


def _check_template(template: str) -> str:
    if not isinstance(template, str) or template.count("{word}") != 1 or not template.endswith("{word}"):
        raise GeometryError(f"The template {template!r} must end with '{{word}}' and hold it once.",
                            "e.g. ' {word}' or 'The word is {word}'.")
    return template


@torch.no_grad()
def word_representations(teacher: Teacher, words: Sequence[str], hook: Union[str, HookPoint],
                         template: str = DEFAULT_TEMPLATE, reduce: str = "last", batch_size: int = 32,
                         max_length: int = 32, state: Optional[TaskState] = None) -> dict[str, torch.Tensor]:
    """{word: residual at `hook` [D] float64 on the CPU}: at the word's last token, or the mean
    over its tokens (those after the template's prefix). The model stops after block L."""
    from core.activations import pad_batch

    point = hook if isinstance(hook, HookPoint) else HookPoint.parse(str(hook))
    teacher.check_hook(point)
    template = _check_template(template)
    if reduce not in REDUCTIONS:
        raise GeometryError(f"reduce must be one of {', '.join(REDUCTIONS)}, not {reduce!r}.", "")
    words = list(dict.fromkeys(words))
    prefix = template[: -len("{word}")]
    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(words), batch_size):
        if state is not None:
            state.check_cancelled()
            state.report(start, len(words), f"Words through {teacher.name}")
        chunk = words[start:start + batch_size]
        texts = [prefix + w for w in chunk]
        lists = teacher.tokenize(texts, max_length)
        firsts = _word_starts(teacher, texts, lists, len(prefix), max_length)
        ids, mask = pad_batch(lists, teacher.pad_id)
        acts = capture(teacher, ids, mask, [point], state)[point].double().cpu()
        for i, (w, toks) in enumerate(zip(chunk, lists)):
            end = len(toks)
            first = min(max(firsts[i], 1), end - 1)  # never BOS, at least the last token
            out[w] = acts[i, end - 1] if reduce == "last" else acts[i, first:end].mean(0)
    return out


def _word_starts(teacher: Teacher, texts: list[str], lists: list[list[int]], char_start: int,
                 max_length: int) -> list[int]:
    """Index of each text's first token that covers a character of the word (which starts at
    `char_start`): from the tokenizer's character offsets where it gives them (a token such as
    ' king' that merges the template's space into the word counts as the word's), else the
    token count of the prefix without its trailing white space."""
    try:
        with teacher.tokenizer_lock:
            enc = teacher.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                                    return_offsets_mapping=True)
        out = []
        for toks, ids, offsets in zip(lists, enc["input_ids"], enc["offset_mapping"]):
            if list(ids) != list(toks):
                raise ValueError("different tokens")
            inside = [k for k, (a, b) in enumerate(offsets) if b > char_start and b > a]
            out.append(inside[0] if inside else len(toks) - 1)
        return out
    except (NotImplementedError, ValueError, TypeError, KeyError):
        n = len(teacher.tokenize([texts[0][:char_start].rstrip()], max_length)[0]) if texts else 0
        return [n] * len(texts)


# ---------------------------------------------------------------------------------------------
# The test on models


@dataclass
class GeometryResult:
    """Per model: the loss of each quadruple in full dimension and after PCA to 2D.

    model_names; quadruples; loss[model] and loss_2d[model]: float64 arrays, one value per
    quadruple; explained_2d[model][class]: variance fraction the class plane keeps (pca='class');
    settings: hook, template, reduce, pca."""

    model_names: list[str]
    quadruples: list[Quadruple]
    loss: dict[str, np.ndarray]
    loss_2d: dict[str, np.ndarray]
    explained_2d: dict[str, dict[str, float]]
    settings: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(q.function for q in self.quadruples))

    def _mask(self, function: Optional[str]) -> np.ndarray:
        return np.array([function is None or q.function == function for q in self.quadruples], dtype=bool)

    def losses(self, model: str, function: Optional[str] = None, pca: bool = False) -> np.ndarray:
        values = (self.loss_2d if pca else self.loss)[model]
        return values[self._mask(function)]

    def curve(self, model: str, function: Optional[str] = None, pca: bool = False) -> dict:
        """`cumulative_curve` of one model's losses (one class, or all when function is None)."""
        return cumulative_curve(self.losses(model, function, pca))

    def summary(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[dict]:
        """One row per (class, model), classes first then 'all': quadruples, median and mean
        loss in full dimension and in 2D, and the cumulative fraction at each threshold (full
        dimension)."""
        rows = []
        for function in self.classes + [None]:
            for m in self.model_names:
                full, flat = self.losses(m, function), self.losses(m, function, pca=True)
                f_full, f_flat = full[np.isfinite(full)], flat[np.isfinite(flat)]
                rows.append({
                    "class": function or "all", "model": m, "n": int(full.size),
                    "median": float(np.median(f_full)) if f_full.size else float("nan"),
                    "mean": float(f_full.mean()) if f_full.size else float("nan"),
                    "median_2d": float(np.median(f_flat)) if f_flat.size else float("nan"),
                    "mean_2d": float(f_flat.mean()) if f_flat.size else float("nan"),
                    "fraction_below": dict(zip([f"{t:g}" for t in thresholds], fraction_below(full, thresholds))),
                })
        return rows

    def to_json(self) -> dict:
        def num(x):
            x = float(x)
            return x if math.isfinite(x) else None

        return {
            "settings": self.settings, "model_names": self.model_names, "classes": self.classes,
            "definition": "loss = ||(b - a) - (d - c)|| / ((||b - a|| + ||d - c||) / 2)",
            "summary": [{k: (num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in self.summary()],
            "explained_2d": self.explained_2d,
            "curves": {m: {c: {"full": self.curve(m, c), "pca_2d": self.curve(m, c, pca=True)}
                           for c in self.classes} for m in self.model_names},
            "quadruples": [{"class": q.function, "a": q.a, "b": q.b, "c": q.c, "d": q.d,
                            **{f"loss_{m}": num(self.loss[m][i]) for m in self.model_names},
                            **{f"loss_2d_{m}": num(self.loss_2d[m][i]) for m in self.model_names}}
                           for i, q in enumerate(self.quadruples)],
        }


def losses_from_vectors(vectors: Mapping[str, torch.Tensor], quadruples: Sequence[Quadruple],
                        pca: str = "class") -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(loss [Q], loss_2d [Q], explained variance per class) of quadruples whose words have
    vectors {word: [D]} (one model). Pure tensors: the model-free half of `geometry`."""
    if pca not in PCA_MODES:
        raise GeometryError(f"pca must be one of {', '.join(PCA_MODES)}, not {pca!r}.", "")
    missing = sorted({w for q in quadruples for w in q.words if w not in vectors})
    if missing:
        raise GeometryError(f"No vector for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}.",
                            "Compute representations of every word of the quadruples.")
    Q = len(quadruples)
    P = torch.stack([torch.stack([torch.as_tensor(vectors[w], dtype=torch.float64) for w in q.words])
                     for q in quadruples]) if Q else torch.zeros(0, 4, 1, dtype=torch.float64)
    loss = parallelogram_loss(P[:, 0], P[:, 1], P[:, 2], P[:, 3]).numpy() if Q else np.zeros(0)
    flat = np.full(Q, np.nan)
    explained: dict[str, float] = {}
    if pca == "none":
        return loss, loss.copy(), explained
    if pca == "quadruple":
        for i in range(Q):
            proj = pca_2d(P[i])[0]
            flat[i] = float(parallelogram_loss(*proj))
        return loss, flat, explained
    for function in dict.fromkeys(q.function for q in quadruples):
        idx = [i for i, q in enumerate(quadruples) if q.function == function]
        words = list(dict.fromkeys(w for i in idx for w in quadruples[i].words))
        X = torch.stack([torch.as_tensor(vectors[w], dtype=torch.float64) for w in words])
        _, comps, mean, explained[function] = pca_2d(X)
        for i in idx:
            proj = (P[i] - mean) @ comps.T
            flat[i] = float(parallelogram_loss(*proj))
    return loss, flat, explained


def geometry(models, hook: Union[str, HookPoint, None] = None, quadruples: Optional[Sequence[Quadruple]] = None,
             template: str = DEFAULT_TEMPLATE, reduce: str = "last", pca: str = "class",
             state: Optional[TaskState] = None) -> GeometryResult:
    """The parallelogram test for each model: `models` is a dict {name: Teacher} (e.g. base and
    variant) or a sequence of Teachers (named by position: base, variant, model3...). `hook`
    (resid_post.L) defaults to the middle block of the first model. The same Teacher object
    given twice is read once."""
    if isinstance(models, Mapping):
        named = [(str(k), v) for k, v in models.items()]
    elif hasattr(models, "base") and hasattr(models, "variant"):
        named = [("base", models.base), ("variant", models.variant)]
    else:
        seq = list(models)
        defaults = ["base", "variant"] + [f"model{i + 1}" for i in range(2, len(seq))]
        named = list(zip(defaults, seq))
    if not named:
        raise GeometryError("No model to test.", "Give at least one model.")
    for name, t in named:
        if not isinstance(t, Teacher):
            raise TypeError(f"Model '{name}' must be a core.models.Teacher, not {type(t).__name__}.")
    if hook is None or not str(hook).strip():
        point = HookPoint("resid_post", named[0][1].n_layers // 2)
    else:
        try:
            point = hook if isinstance(hook, HookPoint) else HookPoint.parse(str(hook))
        except ValueError as exc:
            raise GeometryError(str(exc), "e.g. resid_post.6")
    if point.kind != "resid_post":
        raise GeometryError(f"The parallelogram test reads the residual stream (resid_post.L), not {point.name}.",
                            "e.g. --hook resid_post.6")
    for name, t in named:
        try:
            t.check_hook(point)
        except ValueError as exc:
            raise GeometryError(f"Model '{name}': {exc}", "Choose a layer every model has.")
    quads = list(quadruples) if quadruples is not None else load_quadruples()
    if not quads:
        raise GeometryError("No quadruples to test.", "Pass at least one a : b :: c : d quadruple.")
    if pca not in PCA_MODES:
        raise GeometryError(f"pca must be one of {', '.join(PCA_MODES)}, not {pca!r}.", "")
    words = list(dict.fromkeys(w for q in quads for w in q.words))
    cache: dict[int, dict[str, torch.Tensor]] = {}
    loss, loss_2d, explained = {}, {}, {}
    for name, t in named:
        if id(t) not in cache:
            cache[id(t)] = word_representations(t, words, point, template, reduce, state=state)
        loss[name], loss_2d[name], explained[name] = losses_from_vectors(cache[id(t)], quads, pca)
    return GeometryResult(model_names=[n for n, _ in named], quadruples=quads, loss=loss, loss_2d=loss_2d,
                          explained_2d=explained,
                          settings={"hook": point.name, "template": template, "reduce": reduce, "pca": pca,
                                    "models": {n: t.name for n, t in named}})


__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_THRESHOLDS", "PCA_MODES", "REDUCTIONS", "GeometryError", "GeometryResult",
           "Quadruple", "bundled_quadruples_path", "cumulative_curve", "fraction_below", "geometry",
           "load_quadruples", "losses_from_vectors", "parallelogram_loss", "pca_2d", "word_representations"]
