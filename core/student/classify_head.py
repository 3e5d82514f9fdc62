"""The seed's supervised option (footnote 4): a copy of a student with a linear classification
head on its document vector, fine-tuned on a labelled training split; held-out AUC.

    result = finetune_classifier(student, train_texts, train_labels, held_texts, held_labels)
    result.auc, result.scores, result.classify(["some text"])

The student itself is left untouched. Labels are 0/1 (1 = the positive class, e.g. machine).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.activations import pad_batch
from core.errors import DistillscopeError
from core.progress import TaskState
from core.student.student import Student

from core.contrast import auc as _auc  # the project's one Mann-Whitney AUC (ties count half)


class StudentClassifier(nn.Module):
    """Student network -> document vector -> linear -> logit of the positive class."""

    def __init__(self, student: Student):
        super().__init__()
        self.body = copy.deepcopy(student.model)
        self.head = nn.Linear(student.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(ids, mask)).squeeze(-1)


@dataclass
class ClassifierResult:
    model: StudentClassifier
    student: Student
    auc: float  # held-out ROC AUC of the fine-tuned classifier
    scores: torch.Tensor  # held-out logits
    steps: int

    @torch.no_grad()
    def classify(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Probability of the positive class per text."""
        return torch.sigmoid(_logits(self.model, self.student, list(texts), batch_size))


def finetune_classifier(student: Student, texts: Sequence[str], labels: Sequence[int],
                        held_texts: Sequence[str], held_labels: Sequence[int], epochs: int = 4,
                        lr: float = 3e-4, head_lr: float = 3e-3, batch_size: int = 16, seed: int = 0,
                        state: Optional[TaskState] = None) -> ClassifierResult:
    """Fine-tune a copy of `student` (all but its token table, kept frozen: small labelled sets
    touch few of its rows) with a linear head by binary cross-entropy; AUC on the held-out split."""
    state = state or TaskState()
    y = torch.tensor([float(bool(v)) for v in labels])
    held_y = [int(bool(v)) for v in held_labels]
    if len(texts) != len(y) or len(held_texts) != len(held_y):
        raise DistillscopeError("Every text needs exactly one label.", "Check the labelled corpus.")
    for name, values in (("training", y.tolist()), ("held-out", held_y)):
        if len(set(values)) < 2:
            raise DistillscopeError(f"The {name} split has only one class.",
                                    "Both classes are needed in each split for a classifier and its AUC.")
    torch.manual_seed(seed)
    model = StudentClassifier(student).to(student.device)
    model.body.embed.weight.requires_grad_(False)
    body = [p for p in model.body.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": model.head.parameters(), "lr": head_lr}],
                            weight_decay=0.01)
    tokens = student.tokenize(texts)
    g = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(tokens) / batch_size)
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(tokens), generator=g).tolist()
        for start in range(0, len(perm), batch_size):
            state.check_cancelled()
            index = perm[start:start + batch_size]
            ids, mask = pad_batch([tokens[i] for i in index], student.pad_id)
            logits = model(ids.to(student.device), mask.to(student.device))
            loss = F.binary_cross_entropy_with_logits(logits, y[index].to(logits.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body, 1.0)
            opt.step()
            step += 1
            state.report(step, epochs * per_epoch, f"epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.3f}")
    scores = _logits(model, student, list(held_texts), 32)
    return ClassifierResult(model.eval(), student, _auc(scores, held_y), scores, step)


@torch.no_grad()
def _logits(model: StudentClassifier, student: Student, texts: list[str], batch_size: int) -> torch.Tensor:
    model.eval()
    tokens = student.tokenize(texts)
    out = torch.zeros(len(tokens))
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start:start + batch_size]
        ids, mask = pad_batch(chunk, student.pad_id)
        out[start:start + len(chunk)] = model(ids.to(student.device), mask.to(student.device)).float().cpu()
    return out
