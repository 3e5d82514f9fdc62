"""How closely a student's document vectors agree with the teacher's (seed 000), on plain tensors.

The inputs are the teacher's and the student's z-normalized pooled vectors of the same held-out
documents, row for row, and a dictionary's unit decoder directions. The four numbers the seed
reports (its values beside ours in `AgreementReport.as_rows`):

- mean cosine of the two vectors of each document (seed: 0.76);
- the document-level Pearson correlation of all feature scores (seed: 0.79 in distribution,
  0.58 out of distribution, over a 16k dictionary);
- the mean overlap of the top-20 features (seed: 0.60 / 0.32);
- the held-out AUC of a contrast vector built in each space (seed: 0.95 teacher / 0.93 student).

Beside them, the first three at chance (`chance_agreement`): each teacher vector against the
student vector of another document of the same set. In distribution z-normalization leaves
almost nothing shared (measured: overlap 0.02); out of distribution every document leaves the
reference the same way, so much of the agreement is shared by all (overlap 0.21, r 0.55).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from core.errors import DistillscopeError

# The seed's numbers: (in distribution, out of distribution) where it gave both.
SEED_COSINE = 0.76
SEED_CORRELATION = (0.79, 0.58)
SEED_TOP20_OVERLAP = (0.60, 0.32)
SEED_AUC = {"teacher": 0.95, "student": 0.93}


def _pair(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ndim != 2 or a.shape != b.shape:
        raise DistillscopeError(f"The teacher's and the student's {what} do not match: shapes "
                                f"{list(a.shape)} and {list(b.shape)}.",
                                "Compute both for the same documents, in the same order and space.")
    if a.shape[0] == 0:
        raise DistillscopeError(f"No documents to compare ({what} are empty).",
                                "Hold out some documents.")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise DistillscopeError(f"The {what} hold NaN or infinite values.",
                                "Re-extract the vectors (an empty document or a constant "
                                "reference dimension can cause this).")
    return a, b


def row_cosines(a_ND: torch.Tensor, b_ND: torch.Tensor) -> torch.Tensor:
    """[N] cosine of each row of a with the same row of b (a zero row gives 0)."""
    a, b = _pair(a_ND, b_ND, "vectors")
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))


def mean_cosine(a_ND: torch.Tensor, b_ND: torch.Tensor) -> float:
    """Mean over documents of the cosine between teacher and student vectors. Use z-normalized
    vectors: raw residuals share a large common direction that makes every cosine high."""
    return float(row_cosines(a_ND, b_ND).mean())


def feature_scores(z_ND: torch.Tensor, directions_FD: torch.Tensor) -> torch.Tensor:
    """[N, F] projection of z-normalized vectors onto unit feature directions (for a dictionary,
    pass core.features.scoring.unit_directions(sae)): the scores the feature bars show."""
    if z_ND.ndim != 2 or directions_FD.ndim != 2 or z_ND.shape[1] != directions_FD.shape[1]:
        raise DistillscopeError(f"Vectors {list(z_ND.shape)} cannot be projected onto directions "
                                f"{list(directions_FD.shape)}.",
                                "Use a dictionary trained at the layer the vectors come from.")
    return z_ND.detach().float().cpu() @ directions_FD.detach().float().cpu().T


def feature_correlation(scores_t_NF: torch.Tensor, scores_s_NF: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Per document, the Pearson correlation between the teacher's and the student's scores of
    all F features; returns (mean over documents, [N] per-document values).

    This is the seed's "document-level pearson correlation of all 16k SAE feature scores". A
    document whose scores are constant on one side has no correlation; it counts as 0."""
    t, s = _pair(scores_t_NF, scores_s_NF, "feature scores")
    t = t - t.mean(1, keepdim=True)
    s = s - s.mean(1, keepdim=True)
    den = t.norm(dim=1) * s.norm(dim=1)
    r = torch.where(den > 0, (t * s).sum(1) / den.clamp(min=1e-300), torch.zeros(len(t), dtype=t.dtype))
    return float(r.mean()), r.float()


def top_k_overlap(scores_t_NF: torch.Tensor, scores_s_NF: torch.Tensor, k: int = 20) -> tuple[float, torch.Tensor]:
    """Per document, |top-k(teacher) ∩ top-k(student)| / k; returns (mean, [N] values).

    The top k are the largest *signed* scores, the features a document points towards most,
    as the seed ranks a document's SAE features (a large negative score means the document
    sits against a feature, which is not "having" it). Ties are broken by feature index."""
    t, s = _pair(scores_t_NF, scores_s_NF, "feature scores")
    k = int(k)
    if not 0 < k <= t.shape[1]:
        raise DistillscopeError(f"Top-{k} overlap needs 1 <= k <= {t.shape[1]} (the number of features).",
                                "Pick a smaller k.")

    def top(x):  # a stable sort of -x: equal scores keep feature order, the same every run
        return torch.sort(-x, dim=1, stable=True).indices[:, :k]

    hit = torch.zeros_like(t, dtype=torch.bool).scatter_(1, top(t), True)
    shared = hit.gather(1, top(s)).sum(1)
    values = shared.float() / k
    return float(values.mean()), values


def other_documents(n: int, seed: int = 0) -> torch.Tensor:
    """[n] a partner for each of n documents, never itself (n >= 2): a random order in which
    each document is paired with the next, the last with the first. Fixed by `seed`."""
    if n < 2:
        raise DistillscopeError("Agreement at chance needs at least two documents.", "Hold out more documents.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


def chance_agreement(teacher_z: torch.Tensor, student_z: torch.Tensor, directions_FD: torch.Tensor,
                     k: int = 20) -> dict[str, float]:
    """Mean cosine, feature correlation and top-k overlap with each teacher vector paired with
    the student vector of another document (`other_documents`): the agreement any two
    documents of the set share. Empty for fewer than two documents."""
    return _chance(teacher_z, student_z, feature_scores(teacher_z, directions_FD),
                   feature_scores(student_z, directions_FD), k)


def _chance(t_ND, s_ND, scores_t_NF, scores_s_NF, k: int) -> dict[str, float]:
    """`chance_agreement` from vectors and their feature scores already projected."""
    if len(t_ND) < 2:
        return {}
    other = other_documents(len(s_ND))
    return {"cosine": mean_cosine(t_ND, s_ND[other]),
            "correlation": feature_correlation(scores_t_NF, scores_s_NF[other])[0],
            "overlap": top_k_overlap(scores_t_NF, scores_s_NF[other], k)[0]}


@dataclass
class AgreementReport:
    """The seed's agreement numbers for one corpus, with the per-document values behind them."""

    n_documents: int
    cosine: float
    correlation: float
    top_k_overlap: float
    k: int
    cosines: torch.Tensor  # [N] per document, for histograms
    correlations: torch.Tensor  # [N]
    overlaps: torch.Tensor  # [N]
    auc_teacher: Optional[float] = None  # held-out contrast AUC in each space, when labeled
    auc_student: Optional[float] = None
    contrast: str = ""  # e.g. "machine vs human"
    in_distribution: bool = True  # which of the seed's reference values apply
    extra: dict = field(default_factory=dict)
    # space ("teacher", "student") -> held-out AUCs over random splits (`held_out_aucs`)
    auc_splits: dict = field(default_factory=dict)
    # the first three numbers at chance: "cosine", "correlation", "overlap" (`chance_agreement`)
    chance: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)  # the documents behind the per-document values, if known

    def worst(self, n: int) -> list[tuple[str, float, float, float]]:
        """(document id, cosine, correlation, overlap) of the n documents of lowest cosine: where
        the student reads least like its teacher."""
        order = torch.argsort(self.cosines.double(), stable=True)[:max(0, int(n))].tolist()
        ids = self.ids if len(self.ids) == len(self.cosines) else [f"#{i}" for i in range(len(self.cosines))]
        return [(str(ids[i]), float(self.cosines[i]), float(self.correlations[i]), float(self.overlaps[i]))
                for i in order]

    def seed_values(self) -> dict[str, Optional[float]]:
        """The seed's value for each of the three per-document numbers (None where it gave none)."""
        i = 0 if self.in_distribution else 1
        return {"cosine": SEED_COSINE if self.in_distribution else None, "correlation": SEED_CORRELATION[i],
                "overlap": SEED_TOP20_OVERLAP[i] if self.k == 20 else None}

    def as_rows(self) -> list[tuple[str, Optional[float], Optional[float], Optional[float]]]:
        """(metric, ours, seed, chance) rows for a table; seed None where it reported no value,
        chance None where it was not computed (AUC rows: chance is 0.5)."""
        seed, chance = self.seed_values(), self.chance
        rows = [
            ("mean cosine (z-normalized)", self.cosine, seed["cosine"], chance.get("cosine")),
            ("feature score correlation", self.correlation, seed["correlation"], chance.get("correlation")),
            (f"top-{self.k} feature overlap", self.top_k_overlap, seed["overlap"], chance.get("overlap")),
        ]
        if self.auc_teacher is not None:
            # The seed's AUCs are on held-out RAID, an in-distribution set.
            what = f" ({self.contrast})" if self.contrast else ""
            rows.append((f"contrast AUC, teacher{what}", self.auc_teacher,
                         SEED_AUC["teacher"] if self.in_distribution else None, None))
            rows.append((f"contrast AUC, student{what}", self.auc_student,
                         SEED_AUC["student"] if self.in_distribution else None, None))
        for space, aucs in self.auc_splits.items():
            aucs = torch.as_tensor(aucs, dtype=torch.float64)
            sd = f" (sd {float(aucs.std()):.3f})" if aucs.numel() > 1 else ""
            rows.append((f"contrast AUC, {space}, {aucs.numel()}-split mean{sd}", float(aucs.mean()),
                         SEED_AUC[space] if self.in_distribution else None, None))
        return rows


def agreement_report(teacher_z: torch.Tensor, student_z: torch.Tensor, directions_FD: torch.Tensor,
                     labels: Optional[Sequence] = None, positive: Optional[str] = None,
                     is_held_out=None, negative: Optional[str] = None, k: int = 20,
                     in_distribution: bool = True) -> AgreementReport:
    """The seed's comparison of student and teacher on the same documents.

    Cosine, correlation and overlap are taken over the held-out rows when `is_held_out` is
    given (the student was trained on the others), else over all rows. With `labels` and
    `positive`, a contrast vector (positive vs `negative`, or vs the rest) is built on the
    training rows of each space and its held-out AUC reported for both."""
    from core.contrast import evaluate_contrast

    t, s = _pair(teacher_z, student_z, "vectors")
    held = None
    if is_held_out is not None:
        held = torch.as_tensor(is_held_out).reshape(-1).bool()
        if held.numel() != t.shape[0]:
            raise ValueError(f"is_held_out has {held.numel()} entries for {t.shape[0]} documents.")
    rows = held if held is not None else torch.ones(t.shape[0], dtype=torch.bool)
    if not rows.any():
        raise DistillscopeError("No held-out documents to compare.", "Hold out some documents.")
    t_eval, s_eval = t[rows].float(), s[rows].float()
    cosines = row_cosines(t_eval, s_eval).float()
    st, ss = feature_scores(t_eval, directions_FD), feature_scores(s_eval, directions_FD)
    corr, corrs = feature_correlation(st, ss)
    overlap, overlaps = top_k_overlap(st, ss, k)
    report = AgreementReport(int(rows.sum()), float(cosines.mean()), corr, overlap, int(k),
                             cosines, corrs, overlaps, in_distribution=in_distribution,
                             chance=_chance(t_eval, s_eval, st, ss, k))
    if labels is not None and positive is not None:
        if held is None:
            raise DistillscopeError("A held-out AUC needs a held-out split.",
                                    "Pass is_held_out (core.contrast.split_held_out makes one).")
        ev_t = evaluate_contrast(t, labels, positive, negative, held, space="teacher")
        ev_s = evaluate_contrast(s, labels, positive, negative, held, space="student")
        report.auc_teacher, report.auc_student = ev_t.held_out_auc, ev_s.held_out_auc
        report.contrast = ev_t.contrast.name
    return report
