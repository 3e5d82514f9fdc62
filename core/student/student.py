"""`Student`: a trained student as a first-class model, loadable without its teacher.

A student folder holds

    student.json               format, config, vocab/width, hook, teacher identity, training summary
    model.safetensors          the weights
    reference.safetensors      teacher-side document mean/std the targets were z-normalized with
                               (the same file and format a dictionary folder ships)
    token_reference.safetensors  token-level mean/std (students trained on token targets only)
    tokenizer files            the teacher's tokenizer (tokenizer.save_pretrained)

    student = Student.load(folder)
    z = student.vectors(texts)                # [N, d_teacher], z-normalized like the teacher's
    raw = student.vectors(texts, raw=True)    # back in the teacher's residual units
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from core.activations import pad_batch, plan_batches
from core.errors import DistillscopeError
from core.features.scoring import Reference, load_reference, save_reference
from core.models import pad_id_of, quick_precision
from core.paths import atomic_write_text
from core.progress import TaskState
from core.similarity import zscore
from core.student.model import StudentConfig, StudentModel

FORMAT = "distillscope-student/1"
EPS = 1e-6  # as core.similarity.zscore
TOKENS_PER_BATCH = 1024
CONFIG_FILE, WEIGHTS_FILE, TOKEN_REFERENCE_DIR = "student.json", "model.safetensors", "token_reference"


class StudentError(DistillscopeError):
    """A student folder is missing, damaged or not a student."""


class Student:
    def __init__(self, model: StudentModel, tokenizer, reference: Reference, hook: str,
                 teacher: dict, max_length: int = 256, token_reference: Optional[Reference] = None,
                 info: Optional[dict] = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.reference, self.token_reference = reference, token_reference
        self.hook, self.teacher, self.max_length = hook, teacher, max_length
        self.info = dict(info or {})  # training summary (steps, val_cosine, corpus, ...)
        self.folder: Optional[Path] = None  # where it was loaded from or saved to

    @property
    def cfg(self) -> StudentConfig:
        return self.model.cfg

    @property
    def d_model(self) -> int:
        return self.model.d_out

    @property
    def device(self) -> torch.device:
        return self.model.out.weight.device

    @property
    def name(self) -> str:
        return f"student of {self.teacher.get('name', '?')} at {self.hook}"

    def to(self, device) -> "Student":
        self.model.to(device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.model.out.weight.dtype

    @property
    def pad_id(self) -> int:
        return pad_id_of(self.tokenizer)

    def tokenize(self, texts: Sequence[str], max_length: Optional[int] = None) -> list[list[int]]:
        """Token ids as the teacher's tokenizer gives them (BOS added), truncated."""
        limit = min(max_length or self.max_length, self.cfg.max_positions)
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=limit)
        return [list(ids) for ids in enc["input_ids"]]

    @torch.no_grad()
    def vectors(self, texts: Sequence[str], state: Optional[TaskState] = None, batch_size: int = 64,
                raw: bool = False, max_length: Optional[int] = None, quick: bool = False) -> torch.Tensor:
        """Document vectors [N, d_teacher] (float32, CPU), z-normalized with `reference` (the
        teacher's document statistics), or in the teacher's units with raw=True. Independent of
        batching: documents are grouped by length only to pad less. `quick`: bfloat16 autocast
        on CPUs with AMX (several times faster, values within bfloat16 rounding), as the
        teacher's quick_precision."""
        state = state or TaskState()
        precision = quick_precision(self) if quick else contextlib.nullcontext()
        token_lists = self.tokenize(texts, max_length)
        out = torch.zeros(len(token_lists), self.d_model)
        # About 1,000 padded tokens a batch: measured fastest on a CPU (bigger batches leave
        # the caches and pad more); batch_size caps the documents in one.
        batches = plan_batches([len(t) for t in token_lists], max(TOKENS_PER_BATCH, self.cfg.max_positions))
        done = 0
        for batch in batches:
            state.check_cancelled()
            for chunk in [batch[i:i + batch_size] for i in range(0, len(batch), batch_size)]:
                ids, mask = pad_batch([token_lists[i] for i in chunk], self.pad_id)
                with precision:
                    out[chunk] = self.model(ids.to(self.device), mask.to(self.device)).float().cpu()
                done += len(chunk)
            state.report(done, len(token_lists), f"{done:,}/{len(token_lists):,} documents")
        return self.from_prediction(out, raw)

    def from_prediction(self, pred: torch.Tensor, raw: bool = False) -> torch.Tensor:
        """The model's pooled output in the document z-space (or raw units). A pooled-target
        student predicts that z-space directly; a token-target one predicts in token z-space:
        undo that, then z-normalize as documents."""
        ref = self.reference
        if self.token_reference is None:
            z = pred
        else:
            tok = self.token_reference
            z = zscore(pred * (tok.std + EPS) + tok.mean, ref.mean, ref.std, EPS)
        return z * (ref.std + EPS) + ref.mean if raw else z

    def normalize(self, teacher_vectors: torch.Tensor) -> torch.Tensor:
        """Teacher document vectors (raw units) put in this student's z-space."""
        return zscore(teacher_vectors.float(), self.reference.mean, self.reference.std, EPS)

    # -- folders ---------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the whole folder beside `folder` and rename it into place (no half folder)."""
        folder = Path(folder)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            save_reference(tmp, self.reference)
            if self.token_reference is not None:
                save_reference(tmp / TOKEN_REFERENCE_DIR, self.token_reference)
            self.tokenizer.save_pretrained(str(tmp))
            meta = {"format": FORMAT, "config": self.cfg.to_dict(), "vocab_size": self.model.vocab_size,
                    "d_out": self.model.d_out, "bos_id": self.model.bos_id, "hook": self.hook,
                    "teacher": self.teacher, "max_length": self.max_length, "info": self.info}
            atomic_write_text(tmp / CONFIG_FILE, json.dumps(meta, indent=1))
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Student":
        folder = Path(folder)
        if (folder / "artifacts" / "student" / CONFIG_FILE).is_file():
            folder = folder / "artifacts" / "student"  # a run folder: its final student
        meta = read_meta(folder)
        model = build_model(meta, folder)
        state = _read_weights(folder)
        expected = model.state_dict()
        for name, tensor in expected.items():
            if name not in state:
                raise StudentError(f"'{folder / WEIGHTS_FILE}' lacks the tensor '{name}'.",
                                   "The student folder is damaged; train it again or copy it whole.")
            if state[name].shape != tensor.shape:
                raise StudentError(f"'{name}' in '{folder / WEIGHTS_FILE}' has shape "
                                   f"{list(state[name].shape)}, but student.json needs {list(tensor.shape)}.",
                                   "The weights and student.json come from different students.")
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        reference = _reference(folder, meta["d_out"], required=True)
        token_reference = _reference(folder / TOKEN_REFERENCE_DIR, meta["d_out"], required=False)
        tokenizer = _tokenizer(folder, meta["vocab_size"])
        student = cls(model.to(device), tokenizer, reference, meta["hook"], meta.get("teacher") or {},
                      int(meta.get("max_length", 256)), token_reference, meta.get("info"))
        student.folder = folder
        return student


def is_student_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() or (folder / "artifacts" / "student" / CONFIG_FILE).is_file()


def read_meta(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not folder.exists():
        raise StudentError(f"Student folder '{folder}' does not exist.", "Check the path.")
    if not path.is_file():
        raise StudentError(f"'{folder}' is not a student folder (it has no {CONFIG_FILE}).",
                           "Choose the folder a student job wrote: RUN/artifacts/student.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StudentError(f"'{path}' cannot be read ({exc.__class__.__name__}).",
                           "The student folder is damaged; train it again or copy it whole.")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StudentError(f"'{path}' is not a distillscope student of format {FORMAT}.",
                           "It was written by another tool or version.")
    for key in ("config", "vocab_size", "d_out", "hook"):
        if key not in meta:
            raise StudentError(f"'{path}' lacks '{key}'.", "The student folder is damaged.")
    return meta


def build_model(meta: dict, folder: Path) -> StudentModel:
    names = {f.name for f in fields(StudentConfig)}
    try:
        cfg = StudentConfig(**{k: v for k, v in dict(meta["config"]).items() if k in names}).validate()
        return StudentModel(cfg, int(meta["vocab_size"]), int(meta["d_out"]), meta.get("bos_id"))
    except (TypeError, ValueError) as exc:
        raise StudentError(f"The config in '{folder / CONFIG_FILE}' is invalid: {exc}",
                           "The student folder is damaged.")


def _read_weights(folder: Path) -> dict:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise StudentError(f"'{folder}' has no {WEIGHTS_FILE}.", "The student folder is incomplete; "
                           "train it again or copy it whole.")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise StudentError(f"'{path}' cannot be read ({str(exc)[:200]}).", "The weights file is damaged.")


def _reference(folder: Path, width: int, required: bool) -> Optional[Reference]:
    try:
        ref = load_reference(folder)
    except DistillscopeError as exc:
        raise StudentError(exc.what, exc.hint)
    if ref is None:
        if required:
            raise StudentError(f"'{folder}' has no reference.safetensors (the statistics its "
                               "vectors are z-normalized with).", "The student folder is incomplete.")
        return None
    if ref.mean.numel() != width:
        raise StudentError(f"The reference in '{folder}' has width {ref.mean.numel()}, the student "
                           f"outputs {width}.", "The folder mixes files of different students.")
    return ref


def _tokenizer(folder: Path, vocab_size: int):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises assorted errors on missing/broken files
        raise StudentError(f"The tokenizer in '{folder}' cannot be loaded ({str(exc)[:200]}).",
                           "The student folder needs the tokenizer files its job saved.")
    if len(tok) > vocab_size:
        raise StudentError(f"The tokenizer in '{folder}' has {len(tok):,} tokens, the student's "
                           f"embedding {vocab_size:,}.", "The folder mixes files of different students.")
    tok.padding_side = "right"
    return tok
