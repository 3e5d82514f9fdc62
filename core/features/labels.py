"""Feature labels: automatic ones from the top-activating tokens, user edits that win over them,
stored as `labels.json` beside the dictionary; search by label text and by token.

    {"format": 1, "labels": {"17": {"text": "' because' · ' since'", "auto": true}}}
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from core.errors import DistillscopeError
from core.paths import atomic_write_text

LABELS_FILENAME = "labels.json"
LABELS_FORMAT = 1
AUTO_TOKENS = 3  # token strings at most in an automatic label
AUTO_SHARE = 0.25  # a token string joins the label with at least this share of the leader's weight
AUTO_CONTEXT = 0.2  # share of the weight the leading previous token needs to be named as context


def show_token(text: str) -> str:
    """A token string quoted so its spaces show: ' because', '\\n', "'s"."""
    body = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    quote = '"' if "'" in text and '"' not in text else "'"
    return quote + body + quote


def _weighted(strings: list[str], values: list[float]) -> list[tuple[str, float]]:
    weight: dict[str, float] = defaultdict(float)
    for s, value in zip(strings, values):
        weight[s] += value
    return sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))


def _chosen(ranked: list[tuple[str, float]]) -> list[str]:
    """The leader and up to AUTO_TOKENS - 1 more with at least AUTO_SHARE of its weight."""
    lead = ranked[0][1]
    return [s for s, w in ranked[:AUTO_TOKENS] if w >= AUTO_SHARE * lead]


def previous_rows(index, rows: list[int]) -> list[int]:
    """The cache row before each row in the same document, or -1 (first token, or BOS before)."""
    row_doc, out = index.t["row_doc"], []
    for r in rows:
        out.append(r - 1 if r > 0 and int(row_doc[r - 1]) == int(row_doc[r]) else -1)
    return out


def auto_label(index, f: int, token_strings: Callable[[list[int]], list[str]]) -> str:
    """A short label from the tokens the feature fires on most strongly: the token strings among
    its top activating rows, weighted by activation, the leader and up to two more that carry
    at least a quarter of its weight, e.g. "' because' · ' since'". "" for a dead feature.

    A feature that fires on punctuation or spaces is told apart by its context: when the tokens
    before those rows concentrate (the leader carries at least AUTO_CONTEXT of the weight), they
    are named too, e.g. "'.' after ' it' · ' him'"."""
    rows = index.top_rows(f)
    if not rows or int(index.count[f]) == 0:
        return ""
    values = [value for _, value in rows]
    strings = token_strings([index.token_id(r) for r, _ in rows])
    label = " · ".join(show_token(s) for s in _chosen(_weighted(strings, values)))
    if any(ch.isalnum() for ch in label):
        return label
    before = [(p, v) for p, v in zip(previous_rows(index, [r for r, _ in rows]), values) if p >= 0]
    if not before:
        return label
    ranked = _weighted(token_strings([index.token_id(p) for p, _ in before]), [v for _, v in before])
    if ranked[0][1] < AUTO_CONTEXT * sum(w for _, w in ranked):
        return label
    return label + " after " + " · ".join(show_token(s) for s in _chosen(ranked))


class Labels:
    """Feature labels of one dictionary. User labels (auto false) are never replaced by
    automatic ones; an empty user label is a deliberate "no label" and is kept too."""

    def __init__(self, entries: Optional[dict[int, dict]] = None):
        self.entries: dict[int, dict] = dict(entries or {})

    def get(self, f: int) -> str:
        entry = self.entries.get(int(f))
        return entry["text"] if entry else ""

    def is_auto(self, f: int) -> bool:
        entry = self.entries.get(int(f))
        return bool(entry and entry["auto"])

    def is_user(self, f: int) -> bool:
        entry = self.entries.get(int(f))
        return bool(entry) and not entry["auto"]

    def set(self, f: int, text: str) -> None:
        """A user's label: kept over every automatic relabelling."""
        self.entries[int(f)] = {"text": str(text).strip(), "auto": False}

    def set_auto(self, f: int, text: str) -> bool:
        """An automatic label, unless the user labelled f; returns whether it was set."""
        if self.is_user(f):
            return False
        if text:
            self.entries[int(f)] = {"text": text, "auto": True}
        else:
            self.entries.pop(int(f), None)
        return True

    def reset(self, f: int) -> None:
        """Drop f's label (user or automatic); the next automatic labelling fills it again."""
        self.entries.pop(int(f), None)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, f) -> bool:
        return int(f) in self.entries

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.entries))

    def to_json(self) -> str:
        labels = {str(f): self.entries[f] for f in sorted(self.entries)}
        return json.dumps({"format": LABELS_FORMAT, "labels": labels}, indent=1, ensure_ascii=False)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LABELS_FILENAME
        atomic_write_text(path, self.to_json())
        return path


def load_labels(folder: str | Path) -> Labels:
    """The labels saved in a dictionary folder; empty Labels when it has none yet."""
    path = Path(folder) / LABELS_FILENAME
    if not path.is_file():
        return Labels()
    hint = "Fix the file by hand, or delete it to start the labels afresh."
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistillscopeError(f"'{path}' is not valid JSON ({exc.__class__.__name__}: {exc}).", hint)
    if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT or not isinstance(data.get("labels"), dict):
        raise DistillscopeError(f"'{path}' is not a distillscope labels file of format {LABELS_FORMAT}.", hint)
    entries = {}
    for key, entry in data["labels"].items():
        if not (str(key).isdigit() and isinstance(entry, dict) and isinstance(entry.get("text"), str)
                and isinstance(entry.get("auto", False), bool)):
            raise DistillscopeError(f"'{path}' has a malformed label for feature {key!r}.", hint)
        entries[int(key)] = {"text": entry["text"], "auto": entry.get("auto", False)}
    return Labels(entries)


def label_all(index, sae, token_strings: Callable[[list[int]], list[str]], labels: Labels) -> Labels:
    """Automatic labels for every feature the user has not labelled (dead features lose their
    automatic label). Token strings are decoded once for all features."""
    if sae.d_sae != index.d_sae:
        raise DistillscopeError(f"The index has {index.d_sae} features, the dictionary {sae.d_sae}.",
                                "Build the index for this dictionary.")
    rows = index.t["top_rows"]
    rows = rows[rows >= 0]
    rows = torch.cat([rows, (rows - 1).clamp(min=0)])  # the tokens before them: context labels
    ids = sorted(set(int(t) for t in index.t["row_token"][rows].tolist()))
    decoded = dict(zip(ids, token_strings(ids))) if ids else {}
    lookup = lambda token_ids: [decoded[t] for t in token_ids]  # noqa: E731
    for f in range(index.d_sae):
        if not labels.is_user(f):
            labels.set_auto(f, auto_label(index, f, lookup))
    return labels


def search_labels(labels: Labels, text: str) -> list[int]:
    """Features whose label contains `text`, ignoring case, by feature index; [] for no text."""
    needle = text.casefold().strip()
    if not needle:
        return []
    return [f for f in labels if needle in labels.get(f).casefold()]


def first_token(teacher_or_tokenizer, text: str) -> int:
    """The id of the first token of `text`, tokenized without BOS (as it appears mid-text:
    ' because' with its space is another token than 'because')."""
    tokenizer = getattr(teacher_or_tokenizer, "tokenizer", teacher_or_tokenizer)
    lock = getattr(teacher_or_tokenizer, "tokenizer_lock", None)
    if lock is not None:
        with lock:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DistillscopeError(f"{text!r} gives no token.", "Type a word, e.g. ' because'.")
    return int(ids[0])


def search_token(index, teacher_or_tokenizer, text: str, n: int = 10) -> list:
    """Which features fire on a token (FeatureIndex.features_for_token: TokenHits, the most
    specific first). Uses the first token of `text` tokenized without BOS."""
    return index.features_for_token(first_token(teacher_or_tokenizer, text), n)
