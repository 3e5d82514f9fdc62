"""Training a student one step at a time, so a job can pause, checkpoint and resume exactly.

Optimizer: the token table (vocab x d_embed: 262k x 128 = 33M numbers for Gemma) gets sparse
gradients and SparseAdam, which updates only the rows of the batch's tokens; everything else
gets fused AdamW with weight decay on its matrices. Measured on this project's 2-core CPU
(batch 32 x 64 tokens, 1 thread): a dense fused AdamW step over the whole model took 0.51 s
beside 0.6 s of forward+backward; SparseAdam + AdamW take 0.015 s.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from core.dictionaries.base import check_fields, option
from core.dictionaries.train import lr_factor
from core.models import fast_precision
from core.student.data import StudentData, epoch_order
from core.student.model import StudentModel


@dataclass
class StudentTrainConfig:
    """How to train a student. Every field is documented (see `describe`)."""

    lr: float = option(1e-3, help="Peak learning rate (AdamW; SparseAdam for the token table).",
                       min=1e-7, max=1.0)
    batch_size: int = option(16, help="Documents per step (small corpora learn faster per "
                            "epoch with small batches).", min=1, max=100_000, unit="documents")
    epochs: int = option(20, help="Most passes over the training documents; early stopping "
                         "usually ends training sooner.", min=1, max=100_000, unit="epochs")
    weight_decay: float = option(0.01, help="AdamW weight decay on the weight matrices (not on "
                                 "biases, norms, positions or the token table).", min=0.0, max=1.0)
    warmup_steps: int = option(30, help="Steps over which the learning rate rises linearly to lr.",
                               min=0, unit="steps")
    decay_start: float = option(0.5, help="Fraction of the most steps (epochs x steps per epoch) "
                                "after which the learning rate falls linearly to zero. 1.0: no "
                                "decay.", min=0.0, max=1.0)
    grad_clip: float = option(1.0, help="Clip the gradient norm (all but the token table) to "
                              "this. 0: no clipping.", min=0.0)
    eval_every: int = option(50, help="Steps between validations (val_mse, val_cosine on the "
                             "held-out documents); early stopping counts these.", min=1, unit="steps")
    patience: int = option(5, help="Stop after this many validations in a row without an "
                           "improvement of val_mse by min_delta; the best weights are kept. "
                           "0: never stop early.", min=0, unit="evaluations")
    min_delta: float = option(0.002, help="Smallest fall of val_mse that counts as an improvement.",
                              min=0.0)
    log_every: int = option(5, help="Steps between training-loss reports.", min=1, unit="steps")
    seed: int = option(0, help="Seed of the initialisation, the order of the documents and dropout.",
                       min=0)
    precision: str = option("exact", help="exact: float32 throughout; fast: the forward and "
                            "backward passes in bfloat16 autocast on CPUs with AMX (weights and "
                            "optimizer stay float32; 1.7x the documents per second on this "
                            "project's CPU), float32 elsewhere. Validation is always float32.",
                            choices=("exact", "fast"))

    def validate(self) -> "StudentTrainConfig":
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total_steps(self) -> int:
        """Unknown until the documents are counted (the job reports it then)."""
        return 0


def make_optimizers(model: StudentModel, cfg: StudentTrainConfig) -> list[torch.optim.Optimizer]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name == "embed.weight":
            continue
        (decay if p.ndim == 2 and not name.startswith("pos.") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        dense = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, ValueError):
        dense = torch.optim.AdamW(groups, lr=cfg.lr)
    return [torch.optim.SparseAdam([model.embed.weight], lr=cfg.lr), dense]


def doc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


class StudentTrainer:
    """Steps, validation, early stopping and the state a resume needs."""

    def __init__(self, model: StudentModel, cfg: StudentTrainConfig, train: StudentData,
                 held: StudentData, pad_id: int):
        self.model, self.cfg, self.train, self.held, self.pad_id = model, cfg, train, held, pad_id
        self.tokens_mode = model.cfg.target == "tokens"
        self.opts = make_optimizers(model, cfg)
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.lengths = [len(t) for t in train.tokens]
        self.step = 0
        self.lr = 0.0
        self.best_mse = math.inf
        self.best_step = 0
        self.bad_evals = 0  # validations in a row without improvement
        self.stopped_early = False
        self.best_state: Optional[dict] = None
        self.last_eval: dict = {}
        self._order: tuple[int, list] = (-1, [])

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps or self.stopped_early

    def next_batch(self) -> list[int]:
        epoch = self.epoch
        if self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.train), self.cfg.batch_size, self.cfg.seed,
                                              epoch, self.lengths))
        return self._order[1][self.step % self.steps_per_epoch]

    def train_step(self, index: Optional[list[int]] = None) -> dict:
        """One step on the epoch's next batch (or on the documents `index`, for timing)."""
        model, cfg = self.model, self.cfg
        model.train()
        device = model.out.weight.device
        index = self.next_batch() if index is None else index
        b = {k: v.to(device) for k, v in self.train.batch(index, self.pad_id).items()}
        self.lr = cfg.lr * lr_factor(self.step, self.total_steps, cfg.warmup_steps, cfg.decay_start)
        for opt in self.opts:
            for group in opt.param_groups:
                group["lr"] = self.lr
        precision = (fast_precision(device, model.out.weight.dtype) if cfg.precision == "fast"
                     else contextlib.nullcontext())
        with precision:
            if self.tokens_mode:
                # MSE over the tokens that count (mean over tokens and dimensions)
                _, tok = model(b["ids"], b["mask"], at=(b["token_row"], b["token_pos"]))
                loss = (F.mse_loss(tok.float(), b["token_z"]) if len(b["token_z"])
                        else tok.sum() * 0.0)  # a batch of empty documents
            else:
                loss = doc_loss(model(b["ids"], b["mask"]).float(), b["doc"])
        if not torch.isfinite(loss):
            from core.errors import DistillscopeError
            raise DistillscopeError(f"Training diverged at step {self.step:,} (the loss is not finite).",
                                    "Lower the learning rate.")
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            dense = [p for n, p in model.named_parameters() if n != "embed.weight"]
            torch.nn.utils.clip_grad_norm_(dense, cfg.grad_clip)
        for opt in self.opts:
            opt.step()
        self.step += 1
        return {"step": self.step, "epoch": self.step / self.steps_per_epoch, "lr": self.lr,
                "loss": float(loss.detach())}

    @torch.no_grad()
    def measure(self, to_doc_z=None, batch_size: int = 64) -> dict:
        """val_mse and val_cosine of the held-out document vectors in the document z-space
        (`to_doc_z` maps a token-target model's pooled output there)."""
        preds = predict(self.model, self.held, self.pad_id, batch_size)
        if to_doc_z is not None:
            preds = to_doc_z(preds)
        target = self.held.doc_z
        return {"val_mse": float(F.mse_loss(preds, target)),
                "val_cosine": float(F.cosine_similarity(preds, target, dim=-1).mean())}

    def evaluate(self, to_doc_z=None) -> dict:
        """`measure`, then the early-stopping bookkeeping: a new best keeps its weights."""
        m = self.measure(to_doc_z)
        mse, cosine = m["val_mse"], m["val_cosine"]
        improved = mse < self.best_mse - self.cfg.min_delta
        if improved or self.best_state is None:
            self.best_mse, self.best_step, self.bad_evals = min(mse, self.best_mse), self.step, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        else:
            self.bad_evals += 1
            if self.cfg.patience and self.bad_evals >= self.cfg.patience:
                self.stopped_early = True
        self.last_eval = {"step": self.step, "val_mse": mse, "val_cosine": cosine,
                          "best_val_mse": self.best_mse}
        return self.last_eval

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer moments, best-so-far weights and RNG state. The token table's moments are
        zero outside the rows the corpus touched, and the best weights differ from the current
        ones only there, so both are stored as those rows (a few MB instead of ~400 MB)."""
        tensors = {"rng_cpu": torch.get_rng_state()}
        for i, opt in enumerate(self.opts):
            for p_index, values in opt.state_dict()["state"].items():
                for key, value in values.items():
                    value = value if torch.is_tensor(value) else torch.tensor(value)
                    name = f"opt{i}.{p_index}.{key}"
                    if isinstance(opt, torch.optim.SparseAdam) and value.ndim == 2:
                        _put_rows(tensors, name, value, value.ne(0).any(1))
                    else:
                        tensors[name] = value.detach().cpu().clone()
        current = self.model.state_dict()
        for k, v in (self.best_state or {}).items():
            if k == "embed.weight":
                _put_rows(tensors, f"best.{k}", v, v.ne(current[k].cpu()).any(1))
            else:
                tensors[f"best.{k}"] = v
        return {k: v.contiguous() for k, v in tensors.items()}

    def state_meta(self) -> dict:
        return {"step": self.step, "best_mse": None if math.isinf(self.best_mse) else self.best_mse,
                "best_step": self.best_step, "bad_evals": self.bad_evals,
                "stopped_early": self.stopped_early, "last_eval": self.last_eval,
                "steps_per_epoch": self.steps_per_epoch}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Continue from a checkpoint (the model's weights are loaded separately)."""
        if int(meta["steps_per_epoch"]) != self.steps_per_epoch:
            from core.errors import DistillscopeError
            raise DistillscopeError("The checkpoint was made with other documents or batch size.",
                                    "Resume with the spec and corpus the run started with.")
        self.step, self.best_step = int(meta["step"]), int(meta["best_step"])
        self.best_mse = math.inf if meta["best_mse"] is None else float(meta["best_mse"])
        self.bad_evals, self.stopped_early = int(meta["bad_evals"]), bool(meta["stopped_early"])
        self.last_eval = dict(meta.get("last_eval") or {})
        params = dict(self.model.named_parameters())
        tensors = dict(tensors)
        for i, opt in enumerate(self.opts):
            sd = opt.state_dict()
            state: dict = {}
            for key in [k for k in tensors if k.startswith(f"opt{i}.") and k.endswith(".rows")]:
                tensors[key[:-5]] = _get_rows(tensors, key[:-5], torch.zeros_like(opt.param_groups[0]["params"][0], device="cpu"))
            for key, value in tensors.items():
                if key.startswith(f"opt{i}.") and not key.endswith((".rows", ".values")):
                    _, p_index, name = key.split(".", 2)
                    if name == "step" and isinstance(opt, torch.optim.SparseAdam):
                        value = int(value)
                    state.setdefault(int(p_index), {})[name] = value
            sd["state"] = state
            opt.load_state_dict(sd)
        if "best.embed.weight.rows" in tensors:
            tensors["best.embed.weight"] = _get_rows(tensors, "best.embed.weight",
                                                     params["embed.weight"].detach().cpu().clone())
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.") and not k.endswith((".rows", ".values"))}
        self.best_state = best or None
        torch.set_rng_state(tensors["rng_cpu"])


def _put_rows(tensors: dict, name: str, value: torch.Tensor, keep: torch.Tensor) -> None:
    rows = keep.nonzero().squeeze(1).cpu()
    tensors[f"{name}.rows"] = rows
    tensors[f"{name}.values"] = value.detach().cpu()[rows].clone()


def _get_rows(tensors: dict, name: str, base: torch.Tensor) -> torch.Tensor:
    """`base` with the stored rows written over it."""
    base[tensors[f"{name}.rows"].long()] = tensors[f"{name}.values"].to(base.dtype)
    return base


@torch.no_grad()
def predict(model: StudentModel, data: StudentData, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """The model's pooled outputs [N, D] for every document of `data`."""
    model.eval()
    device = model.out.weight.device
    out = torch.zeros(len(data), model.d_out)
    order = sorted(range(len(data)), key=lambda i: len(data.tokens[i]))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        b = data.batch(index, pad_id, with_tokens=False)
        out[index] = model(b["ids"].to(device), b["mask"].to(device)).float().cpu()
    return out
