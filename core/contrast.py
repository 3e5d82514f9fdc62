"""Contrast vectors (seed 000): the normalized difference of class means, and how well it separates.

A contrast vector points from one class of documents to another in a space of document vectors
(the teacher's z-normalized pooled residual, or the student's prediction of it):

    v = normalize(mean(x | positive) - mean(x | negative or rest))

A document is scored by its dot product with v. There is no supervised training: the held-out
AUC says how much of the class difference the representation carries by itself. The same v can
be projected onto a dictionary's unit decoder directions, exactly as a document vector is, to
show which features make it up (`contrast_features`), and later used as a steering direction.

Rows are split into a training part (the means and the decision threshold come from it) and a
held-out part (the AUC and the ROC that are reported). `split_held_out` makes a deterministic
split stratified by label.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from core.errors import DistillscopeError
from core.paths import atomic_write_bytes, data_dir

REST = "rest"
TENSORS = ("vector", "mean", "std")  # saved as tensors; every other field goes in the metadata
FORMAT = "distillscope-contrast/1"
SUFFIX = ".contrast.safetensors"


# ---------------------------------------------------------------------------------------------
# AUC and ROC


def _check_scores(scores, is_positive) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(is_positive).reshape(-1).bool()
    if s.numel() != y.numel():
        raise ValueError(f"{s.numel()} scores for {y.numel()} labels.")
    if not torch.isfinite(s).all():
        raise DistillscopeError("Some scores are not finite (NaN or infinite).",
                                "Check the document vectors for NaNs (an empty document, a "
                                "reference with zero spread).")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.numel():
        raise DistillscopeError("An AUC needs documents of both classes; "
                                f"here {n_pos} of {y.numel()} are positive.",
                                "Hold out more documents, or pick classes with more documents.")
    return s, y


def _average_ranks(s: torch.Tensor) -> torch.Tensor:
    """1-based ranks of s, tied values sharing the mean of their ranks (as scipy's rankdata)."""
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    # Start index of each run of equal values, and each element's run.
    new_run = torch.ones_like(sorted_s, dtype=torch.bool)
    new_run[1:] = sorted_s[1:] != sorted_s[:-1]
    run_id = torch.cumsum(new_run.long(), 0) - 1
    starts = torch.nonzero(new_run).reshape(-1)
    ends = torch.cat([starts[1:], torch.tensor([s.numel()])])  # exclusive
    run_rank = (starts + 1 + ends).double() / 2  # mean of ranks starts+1 .. ends
    ranks = torch.empty_like(s)
    ranks[order] = run_rank[run_id]
    return ranks


def auc(scores, is_positive) -> float:
    """Probability that a random positive scores above a random negative, ties counting 1/2
    (the Mann-Whitney U statistic over n_pos * n_neg). Exact, O(n log n) via average ranks."""
    s, y = _check_scores(scores, is_positive)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    rank_sum = float(_average_ranks(s)[y].sum())
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def roc_curve(scores, is_positive) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fpr, tpr, thresholds), each [K + 1], from (0, 0) at threshold +inf to (1, 1).

    A document is called positive when score >= threshold; tied scores form one step (a
    diagonal segment), so the trapezoidal area under this curve equals `auc`."""
    s, y = _check_scores(scores, is_positive)
    order = torch.argsort(-s, stable=True)
    s, y = s[order], y[order].double()
    # The last index of each run of equal scores: where the curve may turn.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[:-1] != s[1:]
    tp = torch.cumsum(y, 0)[last]
    fp = torch.cumsum(1 - y, 0)[last]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp / tp[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp / fp[-1]])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), s[last]])
    return fpr, tpr, thresholds


def youden_threshold(scores, is_positive) -> float:
    """The threshold that maximises tpr - fpr (Youden's J), set midway between the chosen score
    and the next lower one, so a new document scoring between them is not decided by a tie."""
    fpr, tpr, thresholds = roc_curve(scores, is_positive)
    j = tpr - fpr
    best = int(torch.argmax(j[1:])) + 1  # skip the +inf start: it calls everything negative
    t = float(thresholds[best])
    lower = thresholds[best + 1:] if best + 1 < len(thresholds) else None
    if lower is not None and len(lower):
        t = (t + float(lower[0])) / 2
    return t


# ---------------------------------------------------------------------------------------------
# Building and evaluating a contrast vector


def _unlabeled(label) -> bool:
    return label is None or label == ""  # a table's empty label cell, a pasted document


def _class_masks(labels: Sequence, positive, negative, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} vectors.")
    present = sorted({lab for lab in labels if not _unlabeled(lab)}, key=str)
    if len(present) < 2:
        raise DistillscopeError(f"A contrast needs two classes; the corpus has "
                                f"{'only ' + repr(present[0]) if present else 'no labels'}.",
                                "Load a labeled corpus (a 'label' field, or one folder per class).")
    for name in (positive,) + (() if negative is None else (negative,)):
        if name not in present:
            raise DistillscopeError(f"No document is labeled {name!r}.",
                                    f"Choose one of: {', '.join(map(str, present))}.")
    if negative is not None and negative == positive:
        raise DistillscopeError(f"Both sides of the contrast are {positive!r}.",
                                "Choose another class, or contrast against the rest.")
    pos = torch.tensor([lab == positive for lab in labels], dtype=torch.bool)
    if negative is None:  # unlabeled documents belong to neither side
        neg = torch.tensor([not _unlabeled(lab) and lab != positive for lab in labels], dtype=torch.bool)
    else:
        neg = torch.tensor([lab == negative for lab in labels], dtype=torch.bool)
    return pos, neg


def _check_vectors(vectors: torch.Tensor) -> torch.Tensor:
    if vectors.ndim != 2:
        raise ValueError(f"Expected vectors [N, D], got shape {list(vectors.shape)}.")
    x = vectors.detach().float().cpu()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(1).sum())
        raise DistillscopeError(f"{bad} document vector(s) hold NaN or infinite values.",
                                "Re-extract the vectors; an empty document or a constant "
                                "dimension in the reference can cause this.")
    return x


def _direction(x_ND: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, positive, negative) -> torch.Tensor:
    for mask, name in ((pos, positive), (neg, negative if negative is not None else REST)):
        if not mask.any():
            raise DistillscopeError(f"The class {name!r} has no documents in the training rows.",
                                    "Hold out fewer documents, or pick a class with more.")
    diff = x_ND[pos].double().mean(0) - x_ND[neg].double().mean(0)
    norm = float(diff.norm())
    if norm == 0 or not math.isfinite(norm):
        raise DistillscopeError("The two class means are identical, so there is no direction.",
                                "Pick classes whose documents differ.")
    return (diff / norm).float()


@dataclass
class ContrastVector:
    """A named contrast direction and what it was made from. score = vectors @ vector."""

    name: str
    vector: torch.Tensor  # [D], unit length
    positive: str
    negative: str = REST  # a label, or "rest" (every other labeled document)
    space: str = ""  # e.g. "teacher resid_post.6 b69482417e2b4861" or "student my-student"
    corpus: str = ""
    n_per_class: dict = field(default_factory=dict)  # {"positive": n, "negative": n} in training
    train_auc: Optional[float] = None
    held_out_auc: Optional[float] = None
    threshold: float = 0.0  # score >= threshold -> positive, chosen on the training rows
    hook: str = ""  # e.g. resid_post.6
    # How raw (teacher) vectors were z-normalized before the contrast was built, so a new text
    # can be scored later; None where the space is already normalized (a student's vectors).
    mean: Optional[torch.Tensor] = None
    std: Optional[torch.Tensor] = None

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw vectors into this contrast's z-space (unchanged when it has no reference)."""
        from core.similarity import zscore

        if self.mean is None or self.std is None:
            return raw
        return zscore(raw.float(), self.mean.float(), self.std.float())

    def score(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N] scores of [N, D] (or [D]) vectors in the same space."""
        x = vectors.detach().float().cpu()
        if x.shape[-1] != self.vector.numel():
            raise DistillscopeError(f"Vectors of width {x.shape[-1]} cannot be scored by a contrast "
                                    f"of width {self.vector.numel()} ({self.space}).",
                                    "Use vectors from the space the contrast was built in.")
        return x @ self.vector.float()

    def classify(self, vectors: torch.Tensor) -> list[str]:
        """The positive label where score >= threshold, else the negative ("rest" stays "rest")."""
        s = self.score(vectors).reshape(-1)
        return [self.positive if float(v) >= self.threshold else self.negative for v in s]

    # -- saving ---------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        meta = {k: v for k, v in asdict(self).items() if k not in TENSORS}
        return {"format": FORMAT, "json": json.dumps(meta, sort_keys=True)}

    def save(self, where: str | Path) -> Path:
        """Write to a file, or into a folder as NAME.contrast.safetensors; atomic."""
        from safetensors.torch import save

        where = Path(where)
        path = where / (_file_stem(self.name) + SUFFIX) if where.is_dir() or not where.suffix else where
        tensors = {k: getattr(self, k).detach().float().cpu().contiguous()
                   for k in TENSORS if getattr(self, k) is not None}
        data = save(tensors, metadata=self.metadata())
        atomic_write_bytes(path, data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ContrastVector":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DistillscopeError(f"'{path}' does not exist.", "Pick a saved contrast file.")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k).float() for k in TENSORS if k in f.keys()}
        except Exception as exc:  # safetensors has its own error types for bad headers
            raise DistillscopeError(f"'{path}' is not a readable contrast file ({exc}).",
                                    "Save the contrast again, or delete the file.")
        if meta.get("format") != FORMAT:
            raise DistillscopeError(f"'{path}' is a safetensors file but not a distillscope "
                                    f"contrast (format {meta.get('format')!r}).",
                                    "Pick a file saved from the contrast view or the CLI.")
        try:
            fields = json.loads(meta["json"])
            cv = cls(**tensors, **fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise DistillscopeError(f"'{path}' has malformed metadata ({exc}).",
                                    "Save the contrast again, or delete the file.")
        vector = cv.vector
        if vector.ndim != 1 or not torch.isfinite(vector).all():
            raise DistillscopeError(f"'{path}' holds a malformed vector (shape {list(vector.shape)}).",
                                    "Save the contrast again, or delete the file.")
        return cv


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "contrast"


def contrast_vector(vectors: torch.Tensor, labels: Sequence, positive: str,
                    negative: Optional[str] = None, name: str = "", space: str = "",
                    corpus: str = "") -> ContrastVector:
    """The unit difference of class means, positive minus negative (or minus the rest when
    negative is None), over all the rows given. Its training AUC and Youden threshold are
    filled in from the same rows."""
    x_ND = _check_vectors(vectors)
    pos, neg = _class_masks(labels, positive, negative, x_ND.shape[0])
    v_D = _direction(x_ND, pos, neg, positive, negative)
    negative_name = REST if negative is None else negative
    rest = {lab for lab, n in zip(labels, neg.tolist()) if n}
    if negative is None and len(rest) == 1:  # the rest is one class: name it ("machine vs human")
        negative_name = next(iter(rest))
    cv = ContrastVector(name or f"{positive} vs {negative_name}", v_D, positive, negative_name,
                        space, corpus, {positive: int(pos.sum()), negative_name: int(neg.sum())})
    s = x_ND[pos | neg] @ v_D
    y = pos[pos | neg]
    cv.train_auc = auc(s, y)
    cv.threshold = youden_threshold(s, y)
    return cv


@dataclass
class ContrastEvaluation:
    """A contrast built on the training rows and scored on the held-out rows."""

    contrast: ContrastVector
    held_out_auc: float
    fpr: torch.Tensor  # ROC on the held-out rows
    tpr: torch.Tensor
    thresholds: torch.Tensor
    scores: dict  # {class name: [n] held-out scores}, for histograms
    n_held_out: dict  # {class name: n}


def split_held_out(labels: Sequence, fraction: float = 0.2, seed: int = 0) -> torch.Tensor:
    """[N] bool, True for held-out rows: `fraction` of each label (at least one where a label
    has two or more documents), drawn with a fixed seed so the split is the same every time."""
    if not 0 < fraction < 1:
        raise ValueError(f"The held-out fraction must be between 0 and 1, not {fraction}.")
    held = torch.zeros(len(labels), dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    by_label: dict = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    for lab in sorted(by_label, key=str):
        rows = by_label[lab]
        k = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        pick = torch.randperm(len(rows), generator=gen)[:k]
        held[torch.tensor(rows)[pick]] = True
    return held


def evaluate_contrast(vectors: torch.Tensor, labels: Sequence, positive: str,
                      negative: Optional[str], is_held_out, name: str = "", space: str = "",
                      corpus: str = "") -> ContrastEvaluation:
    """Build on the training rows (means and threshold), report AUC and ROC on the held-out rows."""
    x_ND = _check_vectors(vectors)
    held = torch.as_tensor(is_held_out).reshape(-1).bool()
    if held.numel() != x_ND.shape[0]:
        raise ValueError(f"is_held_out has {held.numel()} entries for {x_ND.shape[0]} vectors.")
    labels = list(labels)
    pos, neg = _class_masks(labels, positive, negative, x_ND.shape[0])  # checks names on all rows
    for mask, cls in ((pos, positive), (neg, REST if negative is None else negative)):
        if not (mask & ~held).any():
            raise DistillscopeError(f"The class {cls!r} has no documents in the training rows.",
                                    "Hold out fewer documents, or pick a class with more.")
    train_labels = [lab for lab, h in zip(labels, held.tolist()) if not h]
    cv = contrast_vector(x_ND[~held], train_labels, positive, negative, name, space, corpus)
    negative_name = cv.negative
    for mask, cls in ((pos, positive), (neg, negative_name)):
        if not (mask & held).any():
            raise DistillscopeError(f"No held-out document is in class {cls!r}.",
                                    "Hold out more documents.")
    s_all = x_ND @ cv.vector
    test = (pos | neg) & held
    s, y = s_all[test], pos[test]
    cv.held_out_auc = auc(s, y)
    fpr, tpr, thr = roc_curve(s, y)
    scores = {positive: s_all[pos & held], negative_name: s_all[neg & held]}
    return ContrastEvaluation(cv, cv.held_out_auc, fpr, tpr, thr, scores,
                              {k: int(v.numel()) for k, v in scores.items()})


def held_out_aucs(vectors: torch.Tensor, labels: Sequence, positive: str, negative: Optional[str],
                  fraction: float = 0.2, splits: int = 30) -> torch.Tensor:
    """[splits] held-out AUCs, one per stratified split of seeds 0, 1, ... (seed 0 is
    `split_held_out`'s default, so the first is the usual single-split AUC). One split of a
    few hundred documents moves the AUC by a few hundredths (the provenance demo, 120 held out:
    sd 0.02-0.04), so the mean over splits is the firmer number to compare."""
    if splits < 1:
        raise ValueError(f"At least one split is needed, not {splits}.")
    return torch.tensor([evaluate_contrast(vectors, labels, positive, negative,
                                           split_held_out(labels, fraction, seed)).held_out_auc
                         for seed in range(splits)], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Features of a contrast, and where contrasts are kept


def contrast_features(cv: ContrastVector, sae):
    """Which dictionary features make up the contrast: its projection onto the unit decoder
    directions, exactly as a z-normalized document vector is scored (`FeatureScores`, signed;
    rank with `.top(n, by="value")` for the features the positive class points towards)."""
    from core.features.scoring import FeatureScores, unit_directions

    if cv.vector.numel() != sae.d_in:
        raise DistillscopeError(f"The contrast has width {cv.vector.numel()}, the dictionary "
                                f"d_in={sae.d_in}.",
                                "Project teacher-space contrasts onto a dictionary of the same "
                                "model and layer.")
    return FeatureScores("projection", unit_directions(sae) @ cv.vector.float())


def contrasts_dir() -> Path:
    """Saved contrasts, in the user data dir (DISTILLSCOPE_DATA_DIR in tests)."""
    path = data_dir() / "contrasts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_contrasts(folder: Optional[str | Path] = None) -> list[Path]:
    """Saved contrast files, sorted by name; unreadable ones are listed too (load says why)."""
    folder = Path(folder) if folder is not None else contrasts_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
