"""The agreement evaluation of seed 000: how close a student is to its teacher, on documents it
did not train on, reported beside the seed's numbers.

For each set of documents, the teacher's pooled residual (read through the activation cache) and
the student's prediction are put in the same z-space, the student's reference (the teacher's
document statistics on the student's training corpus), then compared as in `core.agreement`:
mean cosine, feature-score correlation and top-k overlap over a dictionary at the student's
hook, and for a labelled set the held-out AUC of a contrast vector built in each space.

The default sets are those of the seed, on the bundled data:
    id         the student's own held-out documents (in distribution)
    contrast   the provenance demo, machine vs human (the seed's RAID contrast)
    ood        the stdlib docstrings demo (out of distribution)

    result = evaluate_agreement(student, teacher, sae, default_sets(student))
    result.save(student.folder)          # agreement.json beside the student
    print(result.table())
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from core.agreement import AgreementReport, agreement_report
from core.errors import DistillscopeError
from core.paths import atomic_write_text
from core.progress import TaskState
from core.similarity import zscore

FILE = "agreement.json"
FORMAT = "distillscope-agreement/1"
CONTRAST_HELD_OUT = 0.2  # of each class, for the contrast AUC (as the Contrast tab)
AUC_SPLITS = 30  # random held-out splits whose mean AUC the table gives beside split 0's


@dataclass
class EvalSet:
    key: str  # "id", "contrast", "ood", or any name
    title: str
    documents: list
    in_distribution: bool
    positive: Optional[str] = None  # a contrast to build in both spaces: positive vs negative
    negative: Optional[str] = None  # None: against the rest
    teacher_raw: Optional[torch.Tensor] = None  # the teacher's pooled vectors [N, D] if known


def training_corpus(student) -> tuple[str, float]:
    """(corpus, eval_fraction) the student was trained with: from its info, or for a student
    saved before they were recorded, from the spec of the run folder it sits in."""
    info = student.info or {}
    if "corpus" in info and "eval_fraction" in info:
        return str(info["corpus"]), float(info["eval_fraction"])
    folder = getattr(student, "folder", None)
    spec_file = folder.parent.parent / "spec.toml" if folder is not None else None
    if spec_file is not None and spec_file.is_file():
        from core.jobs.spec import JobSpec

        spec = JobSpec.from_toml_file(spec_file)
        return spec.data.corpus, spec.run.eval_fraction
    raise DistillscopeError("This student does not say which corpus it was trained on, so its "
                            "held-out documents are unknown.",
                            "Pass the in-distribution documents yourself (--id-corpus).")


def default_sets(student, id_corpus: Optional[str] = None, contrast: Optional[str] = "demo-provenance",
                 positive: str = "machine", negative: Optional[str] = "human",
                 ood: Optional[str] = "demo-ood") -> tuple[list[EvalSet], set[str]]:
    """(sets, texts the student trained on). `id_corpus` replaces the held-out split of the
    student's training corpus (all of it is then in-distribution evaluation data)."""
    from core.documents import load_corpus
    from core.jobs.sae_job import load_documents, split_documents

    if id_corpus is None:
        corpus, fraction = training_corpus(student)
        train, held = split_documents(load_documents(corpus), fraction)
        sets = [EvalSet("id", f"held-out '{corpus}' documents (in distribution)", held, True)]
        seen = {d.text for d in train}
    else:
        sets = [EvalSet("id", f"'{id_corpus}' (in distribution)", load_corpus([id_corpus]).documents, True)]
        seen = set()
    if contrast:
        docs = load_corpus([contrast]).documents
        what = f"{positive} vs {negative or 'rest'}"
        sets.append(EvalSet("contrast", f"'{contrast}', {what}", docs, True, positive, negative))
    if ood:
        sets.append(EvalSet("ood", f"'{ood}' (out of distribution)", load_corpus([ood]).documents, False))
    return sets, seen


def set_documents(sets: Sequence[EvalSet]) -> dict:
    """{set key: {document id: Document}}: to show or open the documents an evaluation names."""
    return {s.key: {d.id: d for d in s.documents} for s in sets}


def teacher_pooled(teacher, documents: Sequence, hook: str, max_length: int,
                   state: Optional[TaskState] = None, precision: str = "exact") -> torch.Tensor:
    """Raw mean-pooled residuals [N, D] of `documents` in their order, through the activation
    cache (extracted once per model, corpus and settings; read back after that)."""
    from core.activations import ExtractSettings, extract
    from core.inspect import auto_cache_folder

    settings = ExtractSettings(hook=hook, mode="pooled", max_length=max_length, precision=precision)
    cache = extract(teacher, documents, auto_cache_folder(teacher, documents, settings), settings, state)
    where = {d: i for i, d in enumerate(cache.document_ids)}
    return cache.pooled()[[where[d.id] for d in documents]]


@dataclass
class AgreementEvaluation:
    """Reports per set, with what was compared; saved as agreement.json beside the student."""

    reports: dict  # key -> AgreementReport
    titles: dict  # key -> title
    seen: dict  # key -> documents of the set the student trained on
    roc: dict = field(default_factory=dict)  # key -> {"teacher": [fpr, tpr], "student": [...]}
    student: str = ""
    teacher: str = ""
    dictionary: str = ""
    hook: str = ""
    seconds: float = 0.0
    precision: str = "exact"  # the teacher's, as for the student's targets

    def rows(self) -> list[tuple[str, str, Optional[float], Optional[float], Optional[float]]]:
        """(set title, metric, ours, seed, chance) for every number, set by set."""
        return [(self.titles[key], *row) for key, report in self.reports.items() for row in report.as_rows()]

    def worst_table(self, n: int, documents: Optional[dict] = None) -> str:
        """Per set, the n documents where the student agrees least with the teacher; with the
        start of each one's text when `documents` (`set_documents`) has it."""
        from core.documents import snippet

        lines = []
        for key, report in self.reports.items():
            known = (documents or {}).get(key, {})
            lines.append(f"\n{self.titles[key]}: the {n} documents of lowest cosine")
            lines.append(f"  {'document':<32} {'cosine':>7} {'r':>7} {'overlap':>8}" + ("  text" if known else ""))
            for doc, cosine, r, overlap in report.worst(n):
                text = f"  {snippet(known[doc].text, 60)}" if doc in known else ""
                lines.append(f"  {doc:<32} {cosine:>7.3f} {r:>7.3f} {overlap:>8.2f}{text}")
        return "\n".join(lines)

    def table(self) -> str:
        lines = [f"{self.student} against {self.teacher}, {self.hook}; features of {self.dictionary}"]
        for key, report in self.reports.items():
            seen = f", {self.seen[key]} seen in training" if self.seen.get(key) else ""
            lines.append(f"\n{self.titles[key]}: {report.n_documents:,} documents{seen}")
            for metric, ours, seed, chance in report.as_rows():
                refs = ([f"seed {seed:.2f}"] if seed is not None else []) + \
                       ([f"chance {chance:.3f}"] if chance is not None else [])
                ref = f"   ({', '.join(refs)})" if refs else ""
                lines.append(f"  {metric:<48} {ours:>6.3f}{ref}")
        return "\n".join(lines)

    # -- saving ---------------------------------------------------------------------------

    def to_json(self) -> dict:
        def values(t: torch.Tensor) -> list[float]:
            return [round(float(v), 5) for v in t.tolist()]

        sets = {}
        for key, r in self.reports.items():
            sets[key] = {"title": self.titles[key], "seen_in_training": self.seen.get(key, 0),
                         "n_documents": r.n_documents, "in_distribution": r.in_distribution,
                         "cosine": r.cosine, "correlation": r.correlation, "top_k_overlap": r.top_k_overlap,
                         "k": r.k, "auc_teacher": r.auc_teacher, "auc_student": r.auc_student,
                         "contrast": r.contrast, "rows": [list(row) for row in r.as_rows()],
                         "auc_splits": {space: a.tolist() for space, a in r.auc_splits.items()},
                         "chance": r.chance, "ids": r.ids,
                         "seed": {f"{k}s": v for k, v in r.seed_values().items()},  # keyed as the lists
                         "cosines": values(r.cosines),
                         "correlations": values(r.correlations), "overlaps": values(r.overlaps),
                         "roc": {space: [values(torch.as_tensor(c)) for c in curve]
                                 for space, curve in self.roc.get(key, {}).items()}}
        return {"format": FORMAT, "student": self.student, "teacher": self.teacher,
                "dictionary": self.dictionary, "hook": self.hook, "seconds": self.seconds,
                "teacher_precision": self.precision, "sets": sets}

    @classmethod
    def from_json(cls, data: dict) -> "AgreementEvaluation":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DistillscopeError("This is not a distillscope agreement file.",
                                    "Evaluate the student again to write a new one.")
        reports, titles, seen, roc = {}, {}, {}, {}
        for key, s in data["sets"].items():
            reports[key] = AgreementReport(
                s["n_documents"], s["cosine"], s["correlation"], s["top_k_overlap"], s["k"],
                torch.tensor(s["cosines"]), torch.tensor(s["correlations"]), torch.tensor(s["overlaps"]),
                s.get("auc_teacher"), s.get("auc_student"), s.get("contrast", ""), s["in_distribution"],
                auc_splits={space: torch.tensor(a) for space, a in s.get("auc_splits", {}).items()},
                chance=dict(s.get("chance") or {}), ids=list(s.get("ids") or []))
            titles[key], seen[key] = s["title"], s.get("seen_in_training", 0)
            if s.get("roc"):
                roc[key] = {space: tuple(torch.tensor(c) for c in curve) for space, curve in s["roc"].items()}
        return cls(reports, titles, seen, roc, data.get("student", ""), data.get("teacher", ""),
                   data.get("dictionary", ""), data.get("hook", ""), float(data.get("seconds", 0.0)),
                   str(data.get("teacher_precision", "exact")))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Optional["AgreementEvaluation"]:
        """The saved evaluation in a student folder, or None when it has none."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DistillscopeError(f"'{path}' cannot be read ({exc.__class__.__name__}).",
                                    "Evaluate the student again; that rewrites it.")


def check_dictionary(student, sae) -> None:
    from core.features.scoring import sae_hook

    hook = sae_hook(sae).name
    if hook != student.hook or int(sae.d_in) != student.d_model:
        raise DistillscopeError(f"The dictionary reads {hook} (width {sae.d_in}); the student predicts "
                                f"{student.hook} (width {student.d_model}).",
                                "Use a dictionary of the student's teacher at the student's layer.")


def evaluate_agreement(student, teacher, sae, sets: Sequence[EvalSet], state: Optional[TaskState] = None,
                       k: int = 20, seen_texts: set = frozenset(), dictionary_name: str = "") -> AgreementEvaluation:
    """The seed's comparison on every set (see the module docstring). Cancellable via `state`."""
    from core.contrast import evaluate_contrast, held_out_aucs, split_held_out
    from core.features.scoring import unit_directions

    state = state or TaskState()
    check_dictionary(student, sae)
    started = time.monotonic()
    directions = unit_directions(sae)
    result = AgreementEvaluation({}, {}, {}, student=student.name, teacher=teacher.name,
                                 dictionary=dictionary_name, hook=student.hook)
    for n, s in enumerate(sets):
        if not s.documents:
            raise DistillscopeError(f"The set '{s.title}' has no documents.", "Choose another corpus.")
        teacher_z, student_z = set_vectors(student, teacher, s, state, f"{s.key} ({n + 1}/{len(sets)})")
        report = agreement_report(teacher_z, student_z, directions, k=k, in_distribution=s.in_distribution)
        report.ids = [d.id for d in s.documents]
        if s.positive is not None:
            labels = [d.label or "" for d in s.documents]
            held = split_held_out(labels, CONTRAST_HELD_OUT)
            ev = {space: evaluate_contrast(z, labels, s.positive, s.negative, held, space=space)
                  for space, z in (("teacher", teacher_z), ("student", student_z))}
            report.auc_teacher, report.auc_student = ev["teacher"].held_out_auc, ev["student"].held_out_auc
            report.contrast = ev["teacher"].contrast.name
            report.auc_splits = {space: held_out_aucs(z, labels, s.positive, s.negative, CONTRAST_HELD_OUT,
                                                      AUC_SPLITS)
                                 for space, z in (("teacher", teacher_z), ("student", student_z))}
            result.roc[s.key] = {space: (e.fpr.float(), e.tpr.float()) for space, e in ev.items()}
        result.reports[s.key] = report
        result.titles[s.key] = s.title
        result.seen[s.key] = sum(d.text in seen_texts for d in s.documents)
    result.seconds = time.monotonic() - started
    result.precision = teacher_precision(student)
    return result


def teacher_precision(student) -> str:
    """The teacher computes as it did for the student's targets ('fast': its bfloat16 twin, 3x
    faster on AMX CPUs, activations within 0.4%); students that do not say: exact."""
    return (student.info or {}).get("precision", "exact")


def set_vectors(student, teacher, s: EvalSet, state: Optional[TaskState] = None,
                prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's and the student's z-normalized vectors of a set's documents, in the
    student's z-space (the teacher's from `s.teacher_raw` when the set has them)."""
    state = state or TaskState()
    state.report(0, 1, f"{prefix or s.key}: the teacher's vectors")
    raw = (s.teacher_raw if s.teacher_raw is not None else
           teacher_pooled(teacher, s.documents, student.hook, student.max_length, state,
                          teacher_precision(student)))
    teacher_z = zscore(raw, student.reference.mean.float(), student.reference.std.float())
    state.report(0, 1, f"{prefix or s.key}: the student's vectors")
    return teacher_z, student.vectors([d.text for d in s.documents], state)
