"""Tagging crosscoder latents by the kind of reasoning they fire on (seed 003's four
categories: self-reflection, deductive, alternative and contrastive reasoning).

    sets = load_prompt_sets()                          # bundled: 4 categories + 'control'
    tags = tag_latents(crosscoder, [base, variant], sets)
    tags.rows()                                        # table rows of the tagged latents
    tags.top("self-reflection", 10)

Both models read each text; the crosscoder encodes the paired residuals at its hook. Per latent
j and prompt set s (non-BOS tokens only):

    act[s, j]      = mean over the texts of s of the latent's largest activation in the text
    fires[s, j]    = fraction of the texts of s in which the latent fires at all
    token_mean[s, j] = mean activation over all tokens of s (reported, not used for tagging)

A reasoning marker ("Wait", "Therefore", "However") is one or two tokens of a twenty-token text,
so the per-text maximum, not the token mean, is what separates a marker latent from the rest.

Specificity of latent j to category c: act[c, j] over the largest act of j on every other set,
the other categories and the control set alike (infinite when j is silent elsewhere):

    spec[c, j] = act[c, j] / max_{s != c} act[s, j]

Latent j is tagged with category c when spec[c, j] >= `ratio` (default 2: at least twice as
strong on c as on any other set) and it fires in at least `min_fraction` of c's texts (default
0.25). At most one category can pass (ratio > 1). A latent that passes for no single category
but fires on the reasoning sets as a whole, mean_c act[c, j] >= ratio * act[control, j] and in
at least `min_fraction` of all reasoning texts, is tagged 'reasoning' (general). Everything
else is untagged. The ratio to the control set alone, act[c, j] / act[control, j], is reported
per category as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch

from core.crosscoder.ablation import (_batches, _check_texts, _masks, paired_latents, resolve_hook,
                                      resolve_models, tokenize_shared)
from core.crosscoder.analysis import classify, dead_latents, relative_norms
from core.crosscoder.model import Crosscoder
from core.errors import DistillscopeError
from core.models import HookPoint
from core.paths import resources_dir
from core.progress import TaskState

CATEGORIES = ("self-reflection", "deductive", "alternative", "contrastive")
CONTROL = "control"
GENERAL = "reasoning"
SPECIFICITY_RATIO = 2.0
MIN_FIRING_FRACTION = 0.25


class ReasoningError(DistillscopeError):
    """A prompt set file or a tagging setting is invalid."""


def bundled_prompts_dir() -> Path:
    return resources_dir() / "reasoning"


def load_prompt_sets(paths: Union[str, Path, Sequence[Union[str, Path]], None] = None) -> dict[str, list[str]]:
    """{category: [texts]} from .jsonl / .csv / .tsv files or folders whose rows carry a 'text'
    and a 'category' (None: the bundled sets, resources/reasoning/*.jsonl). Problems in a file
    (a malformed line, a row without a category) are a ReasoningError naming the place; there
    must be a 'control' set and at least one other."""
    from core.documents import load_paths

    if paths is None:
        files = sorted(bundled_prompts_dir().glob("*.jsonl"))
        if not files:
            raise ReasoningError(f"The bundled prompt sets are missing from {bundled_prompts_dir()}.",
                                 "Reinstall distillscope, or pass your own prompt file.")
        paths = files
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise ReasoningError(f"The prompt file '{p}' does not exist.", "Check the path.")
    hint = ("Each row needs a 'text' and a 'category' (JSONL {\"category\": \"deductive\", \"text\": ...}, "
            "or CSV/TSV with a header row category,text); include a 'control' set of neutral texts.")
    corpus = load_paths([str(p) for p in paths], label_field="category")
    if corpus.problems:
        first = corpus.problems[0]
        where = f"{first.source}:{first.line}" if first.line else first.source
        more = f" (and {len(corpus.problems) - 1} more problems)" if len(corpus.problems) > 1 else ""
        raise ReasoningError(f"{where}: {first.message}{more}", hint)
    sets: dict[str, list[str]] = {}
    for doc in corpus.documents:
        if doc.label is None:
            raise ReasoningError(f"{doc.source}: the text has no category.", hint)
        sets.setdefault(doc.label.strip(), []).append(doc.text)
    if CONTROL not in sets:
        raise ReasoningError(f"The prompt sets ({', '.join(sorted(sets)) or 'none'}) have no '{CONTROL}' set.",
                             "Add neutral texts with category 'control': specificity is measured against them.")
    if len(sets) < 2:
        raise ReasoningError("There is only the control set.", "Add at least one reasoning category.")
    return sets


# ---------------------------------------------------------------------------------------------
# Activity per set


@dataclass
class SetActivity:
    """Per prompt set s (rows, in `names` order) and latent j: act [S, F] (mean per-text max),
    fires [S, F] (fraction of texts where j fires), token_mean [S, F]; n_texts [S]."""

    names: list[str]
    act: torch.Tensor
    fires: torch.Tensor
    token_mean: torch.Tensor
    n_texts: list[int]

    def row(self, name: str) -> int:
        return self.names.index(name)


def activity_from_activations(per_set: Mapping[str, Sequence[torch.Tensor]]) -> SetActivity:
    """SetActivity from latent activations per set: {name: [f [T_i, F] per text]}, each text's
    non-BOS tokens only. Pure tensors (the model-free half of `set_activity`)."""
    names, act, fires, token_mean, n_texts = [], [], [], [], []
    F = None
    for name, texts in per_set.items():
        texts = [torch.as_tensor(f, dtype=torch.float64) for f in texts]
        if not texts:
            raise ReasoningError(f"The set '{name}' has no texts.", "Give every set at least one text.")
        F = texts[0].shape[-1] if F is None else F
        maxes = torch.stack([f.amax(0) if f.shape[0] else torch.zeros(F, dtype=torch.float64) for f in texts])
        tokens = torch.cat([f.reshape(-1, F) for f in texts])
        names.append(str(name))
        act.append(maxes.clamp(min=0).mean(0))
        fires.append((maxes > 0).double().mean(0))
        token_mean.append(tokens.mean(0) if tokens.shape[0] else torch.zeros(F, dtype=torch.float64))
        n_texts.append(len(texts))
    if not names:
        raise ReasoningError("No prompt sets.", "Give a control set and at least one category.")
    return SetActivity(names, torch.stack(act), torch.stack(fires), torch.stack(token_mean), n_texts)


@torch.no_grad()
def set_activity(crosscoder: Crosscoder, models, sets: Mapping[str, Sequence[str]],
                 hook: Union[str, HookPoint, None] = None, max_length: int = 64, batch_size: int = 8,
                 state: Optional[TaskState] = None) -> SetActivity:
    """Run every set's texts through both models and summarize the crosscoder's latents per set."""
    models = resolve_models(crosscoder, models)
    point = resolve_hook(crosscoder, hook)
    for t in models:
        t.check_hook(point)
    per_set: dict[str, list[torch.Tensor]] = {}
    total = sum(len(v) for v in sets.values())
    done = 0
    for name, texts in sets.items():
        texts = _check_texts(texts)
        lists = tokenize_shared(models, texts, max_length)
        per_set[name] = []
        for rows in _batches(len(lists), batch_size):
            if state is not None:
                state.check_cancelled()
                state.report(done, total, f"Prompt set {name}")
            ids, mask, keep = _masks(models[0], [lists[r] for r in rows])
            _, f = paired_latents(crosscoder, models, point, ids, mask, state)
            f = f.cpu()
            for i in range(len(rows)):
                per_set[name].append(f[i][keep[i]])
            done += len(rows)
    return activity_from_activations(per_set)


# ---------------------------------------------------------------------------------------------
# Tags


@dataclass
class ReasoningTags:
    """Tags per latent and the numbers behind them; `rows()` is the table to show.

    tag [F]: a category, 'reasoning' or '' (untagged); specificity [F]: spec of the tagged
    category (for 'reasoning': mean category act over control act; NaN when untagged);
    vs_control [C, F]: act[c] / act[control] per category; relative_norm / latent_class [F]
    from the crosscoder's decoders (None without one)."""

    activity: SetActivity
    categories: list[str]
    control: str
    tag: list[str]
    specificity: torch.Tensor
    vs_control: torch.Tensor
    ratio: float
    min_fraction: float
    relative_norm: Optional[torch.Tensor] = None
    latent_class: Optional[list[str]] = None
    settings: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """{tag: {latent class or 'all': count}} over the tagged latents."""
        out: dict[str, dict[str, int]] = {}
        for j, t in enumerate(self.tag):
            if not t:
                continue
            d = out.setdefault(t, {"all": 0})
            d["all"] += 1
            if self.latent_class is not None:
                d[self.latent_class[j]] = d.get(self.latent_class[j], 0) + 1
        return out

    def row(self, j: int) -> dict:
        a = self.activity

        def num(x) -> Optional[float]:
            x = float(x)
            return x if math.isfinite(x) else None

        r = {"latent": j, "tag": self.tag[j] or None,
             "specificity": num(self.specificity[j]),
             "silent_elsewhere": bool(self.tag[j]) and math.isinf(float(self.specificity[j]))}
        if self.relative_norm is not None:
            r["relative_norm"] = num(self.relative_norm[j])
            r["class"] = self.latent_class[j]
        for s in a.names:
            r[f"act_{s}"] = float(a.act[a.row(s), j])
            r[f"fires_{s}"] = float(a.fires[a.row(s), j])
        for i, c in enumerate(self.categories):
            r[f"vs_control_{c}"] = num(self.vs_control[i, j])
        return r

    def rows(self, tagged_only: bool = True, latent_class: Optional[str] = None) -> list[dict]:
        """Table rows sorted by tag (categories in order, then 'reasoning') and falling
        specificity; only tagged latents unless `tagged_only` is False; optionally one class."""
        order = {t: i for i, t in enumerate(self.categories + [GENERAL, ""])}
        js = [j for j in range(len(self.tag)) if (self.tag[j] or not tagged_only)
              and (latent_class is None or (self.latent_class and self.latent_class[j] == latent_class))]
        js.sort(key=lambda j: (order[self.tag[j]], -_finite(self.specificity[j]), j))
        return [self.row(j) for j in js]

    def top(self, category: str, n: int = 10) -> list[dict]:
        """The n latents most specific to `category` (tagged with it first, then by spec)."""
        if category not in self.categories and category != GENERAL:
            raise ReasoningError(f"'{category}' is not one of the categories ({', '.join(self.categories)}).", "")
        return [r for r in self.rows() if r["tag"] == category][:n]

    def to_json(self, tagged_only: bool = True) -> dict:
        return {"settings": self.settings, "categories": self.categories, "control": self.control,
                "ratio": self.ratio, "min_fraction": self.min_fraction,
                "n_texts": dict(zip(self.activity.names, self.activity.n_texts)),
                "counts": self.counts(), "rows": self.rows(tagged_only)}


def _finite(x) -> float:
    x = float(x)
    return 1e300 if math.isinf(x) and x > 0 else (x if math.isfinite(x) else -1.0)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with x / 0 = inf for x > 0 and 0 / 0 = NaN."""
    out = num / den.clamp(min=1e-300)
    out = torch.where(den > 0, out, torch.where(num > 0, torch.full_like(num, math.inf),
                                                   torch.full_like(num, math.nan)))
    return out


def tag_activity(activity: SetActivity, control: str = CONTROL, ratio: float = SPECIFICITY_RATIO,
                 min_fraction: float = MIN_FIRING_FRACTION) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(tag [F], specificity [F], vs_control [C, F]) by the rule of the module docstring."""
    if control not in activity.names:
        raise ReasoningError(f"There is no '{control}' set among {', '.join(activity.names)}.",
                             "Include neutral control texts.")
    if not ratio > 1 or not math.isfinite(ratio):
        raise ReasoningError(f"The specificity ratio must be a number above 1, not {ratio}.", "e.g. 2")
    if not 0 <= min_fraction <= 1:
        raise ReasoningError(f"The minimum firing fraction must lie in [0, 1], not {min_fraction}.", "e.g. 0.25")
    cats = [n for n in activity.names if n != control]
    if not cats:
        raise ReasoningError("There is only the control set.", "Add at least one reasoning category.")
    act, fires = activity.act, activity.fires
    ctrl = act[activity.row(control)]
    F = act.shape[1]
    spec = torch.empty(len(cats), F, dtype=torch.float64)
    for i, c in enumerate(cats):
        r = activity.row(c)
        others = torch.cat([act[:r], act[r + 1:]]).amax(0)
        spec[i] = _ratio(act[r], others)
    vs_control = torch.stack([_ratio(act[activity.row(c)], ctrl) for c in cats])
    tag = [""] * F
    specificity = torch.full((F,), math.nan, dtype=torch.float64)
    for i, c in enumerate(cats):
        ok = (spec[i] >= ratio) & (fires[activity.row(c)] >= min_fraction) & (act[activity.row(c)] > 0)
        for j in ok.nonzero().flatten().tolist():
            tag[j] = c
            specificity[j] = spec[i, j]
    rows = [activity.row(c) for c in cats]
    n = torch.tensor([activity.n_texts[r] for r in rows], dtype=torch.float64)
    mean_act = act[rows].mean(0)
    fires_all = (fires[rows] * n[:, None]).sum(0) / n.sum()
    general = _ratio(mean_act, ctrl)
    ok = (general >= ratio) & (fires_all >= min_fraction) & (mean_act > 0)
    for j in ok.nonzero().flatten().tolist():
        if not tag[j]:
            tag[j] = GENERAL
            specificity[j] = general[j]
    return tag, specificity, vs_control


def tag_latents(crosscoder: Crosscoder, models, sets: Optional[Mapping[str, Sequence[str]]] = None,
                control: str = CONTROL, ratio: float = SPECIFICITY_RATIO, min_fraction: float = MIN_FIRING_FRACTION,
                hook: Union[str, HookPoint, None] = None, max_length: int = 64, batch_size: int = 8,
                state: Optional[TaskState] = None) -> ReasoningTags:
    """Tag every latent of `crosscoder` with the reasoning category it is specific to, from the
    prompt sets (default: the bundled ones) run through both models (a sequence base, variant;
    a dict by model name; or a pair object with .base and .variant)."""
    sets = dict(sets) if sets is not None else load_prompt_sets()
    activity = set_activity(crosscoder, models, sets, hook, max_length, batch_size, state)
    return tags_from_activity(activity, crosscoder, control, ratio, min_fraction,
                              settings={"hook": resolve_hook(crosscoder, hook).name, "max_length": max_length})


def tags_from_activity(activity: SetActivity, crosscoder: Optional[Crosscoder] = None, control: str = CONTROL,
                       ratio: float = SPECIFICITY_RATIO, min_fraction: float = MIN_FIRING_FRACTION,
                       settings: Optional[dict] = None) -> ReasoningTags:
    """ReasoningTags of an activity summary; with the crosscoder, each latent's relative norm and
    class come along (so 'variant-only latents tagged self-reflection' is one filter away)."""
    tag, spec, vs_control = tag_activity(activity, control, ratio, min_fraction)
    rel = classes = None
    if crosscoder is not None:
        rel = relative_norms(crosscoder).double()
        classes = classify(rel, dead_latents(crosscoder))
    return ReasoningTags(activity=activity, categories=[n for n in activity.names if n != control],
                         control=control, tag=tag, specificity=spec, vs_control=vs_control, ratio=ratio,
                         min_fraction=min_fraction, relative_norm=rel, latent_class=classes,
                         settings=settings or {})


__all__ = ["CATEGORIES", "CONTROL", "GENERAL", "MIN_FIRING_FRACTION", "SPECIFICITY_RATIO", "ReasoningError",
           "ReasoningTags", "SetActivity", "activity_from_activations", "bundled_prompts_dir", "load_prompt_sets",
           "set_activity", "tag_activity", "tag_latents", "tags_from_activity"]
