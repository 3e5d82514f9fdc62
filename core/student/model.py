"""The tiny student (seed 000): a small transformer encoder over the teacher's tokenizer that
reads a document and predicts the teacher's z-normalized mean-pooled residual at one hook.

    ids [B, T] -> embed (vocab x d_embed) -> proj to d_hidden + learned positions
               -> n_layers pre-norm blocks (attention over non-pad tokens, or causal: over
                  earlier tokens, as the teacher's; GELU MLP)
               -> final LayerNorm -> linear to d_out per token   (token predictions [B, T, d_out])
               -> masked mean over content tokens (non-pad, non-BOS) (document vector [B, d_out])

Pooling and the output layer commute (both linear), so pooled targets and token-level targets
share one network: the pooled loss compares the mean of token predictions with the document
target, the token loss compares every token prediction with that token's residual.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from core.dictionaries.base import check_fields, option


@dataclass
class StudentConfig:
    """The student's shape and what it learns. Every field is documented (`describe`)."""

    n_layers: int = option(4, help="Transformer blocks.", min=1, max=48)
    d_hidden: int = option(256, help="Width of the residual stream inside the student.",
                           min=8, max=8192)
    n_heads: int = option(4, help="Attention heads per block (d_hidden must divide by it).",
                          min=1, max=128)
    d_embed: int = option(128, help="Width of the token embeddings, projected up to d_hidden "
                          "(keeps the 262k-token table small: vocab x d_embed).", min=4, max=8192)
    d_mlp: int = option(128, help="Hidden width of each block's MLP (the seed does not give "
                        "it). Half of d_hidden by default: on the mixed demo corpus, 4 epochs at "
                        "128 agree with the teacher as closely as 3 at 256 (held-out cosine 0.740 "
                        "vs 0.739) in about the same training time, and the student then reads "
                        "documents 11-14% faster; 64 lost 0.017 of cosine.", min=4, max=65536)
    max_positions: int = option(512, help="Longest input the learned position table covers; "
                                "[data] max_length must not exceed it.", min=2, max=32768,
                                unit="tokens")
    dropout: float = option(0.0, help="Dropout in attention and MLP while training.", min=0.0, max=0.9)
    target: str = option("pooled", help="pooled: learn the document's mean residual (the seed's "
                         "method, fast); tokens: learn every token's residual and pool the "
                         "predictions (the seed's next step: needs a token activation cache, "
                         "larger on disk and slower). On the demo corpus tokens raised the held-out "
                         "cosine from 0.52 to 0.66 and the feature correlation from 0.60 to 0.75.",
                         choices=("pooled", "tokens"))
    attention: str = option("bidirectional", help="bidirectional: every token sees the whole "
                            "document (an encoder, as the seed's); causal: each token sees only "
                            "itself and earlier tokens, as in the teacher, whose token residuals "
                            "depend on nothing later. With token targets on the mixed demo corpus "
                            "causal raised the held-out cosine from 0.740 to 0.747 and the top-20 "
                            "overlap from 0.526 to 0.532, at the same speed.",
                            choices=("bidirectional", "causal"))
    init_embeddings: str = option("teacher", help="teacher: start the token embeddings from the "
                                  "teacher's own, reduced to d_embed by PCA (tokens the corpus "
                                  "never shows still get sensible vectors); random: small "
                                  "random vectors.", choices=("teacher", "random"))

    def validate(self) -> "StudentConfig":
        check_fields(self)
        if self.d_hidden % self.n_heads:
            raise ValueError(f"'d_hidden' ({self.d_hidden}) must be a multiple of 'n_heads' ({self.n_heads}).")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block; attention ignores padding keys (or, causal, sees only the
    tokens up to each query)."""

    def __init__(self, d: int, heads: int, d_mlp: int, dropout: float, causal: bool = False):
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def forward(self, x_BTD: torch.Tensor, key_ok_B11T: Optional[torch.Tensor]) -> torch.Tensor:
        B, T, D = x_BTD.shape
        q, k, v = self.qkv(self.ln1(x_BTD)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        att = attention(q, k, v, key_ok_B11T, p, self.causal).transpose(1, 2).reshape(B, T, D)
        if self.training or torch.is_grad_enabled():
            x_BTD = x_BTD + F.dropout(self.o(att), p, self.training)
            return x_BTD + F.dropout(self.down(F.gelu(self.up(self.ln2(x_BTD)))), p, self.training)
        # Inference adds into the residual stream in place: fewer new buffers, 2-9% faster at one
        # thread (forward-only A/Bs, float32 and bfloat16). `x_BTD` is the model's own intermediate.
        x_ND = x_BTD.view(B * T, D)
        add_linear_(x_ND, att.view(B * T, D), self.o)
        add_linear_(x_ND, F.gelu(self.up(self.ln2(x_BTD))).view(B * T, -1), self.down)
        return x_BTD


def add_linear_(x_ND: torch.Tensor, in_NI: torch.Tensor, linear: nn.Linear) -> None:
    """x += linear(in), in place; as one matrix product into x when the dtypes agree (float32),
    else through the layer (under bfloat16 autocast, which casts its inputs)."""
    if x_ND.dtype == in_NI.dtype == linear.weight.dtype:
        x_ND.addmm_(in_NI, linear.weight.t()).add_(linear.bias)
    else:
        x_ND.add_(linear(in_NI))


def attention(q, k, v, key_ok, dropout_p: float, causal: bool = False) -> torch.Tensor:
    """SDPA; when training on a CPU under bfloat16 autocast, in float32: the CPU's bfloat16
    attention backward is slower than its float32 one (measured, one thread, 32 x 4 heads x 64
    tokens, forward and backward: 24.6 ms in bfloat16, 8.9 ms in float32), unlike its matrix
    products. The forward alone is as fast in bfloat16, so inference keeps it."""
    if q.device.type != "cpu" or q.dtype == torch.float32 or not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok, dropout_p=dropout_p, is_causal=causal)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=key_ok,
                                             dropout_p=dropout_p, is_causal=causal)
    return out.to(q.dtype)


class StudentModel(nn.Module):
    def __init__(self, cfg: StudentConfig, vocab_size: int, d_out: int, bos_id: Optional[int]):
        super().__init__()
        self.cfg, self.vocab_size, self.d_out, self.bos_id = cfg, vocab_size, d_out, bos_id
        # sparse: a step touches only the rows of the tokens in the batch (see train.py)
        self.embed = nn.Embedding(vocab_size, cfg.d_embed, sparse=True)
        self.proj = nn.Linear(cfg.d_embed, cfg.d_hidden)
        self.pos = nn.Embedding(cfg.max_positions, cfg.d_hidden)
        self.causal = cfg.attention == "causal"
        self.blocks = nn.ModuleList(Block(cfg.d_hidden, cfg.n_heads, cfg.d_mlp, cfg.dropout, self.causal)
                                    for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_hidden)
        self.out = nn.Linear(cfg.d_hidden, d_out)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=1.0 if module is self.embed else 0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def hidden(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        T = ids_BT.shape[1]
        if T > self.cfg.max_positions:
            raise ValueError(f"Input of {T} tokens is longer than the student's max_positions "
                             f"({self.cfg.max_positions}).")
        x = self.proj(self.embed(ids_BT)) + self.pos.weight[:T]
        # No mask when nothing is padded (SDPA then takes its fused kernel; length-bucketed
        # batches often have no padding), nor when causal: padding is on the right, so a token
        # that counts never sees one.
        key_ok = None if self.causal or bool(mask_BT.all()) else mask_BT.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_ok)
        return self.ln_f(x)

    def content(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """Tokens that count in a document's mean: non-pad, BOS left out (as the teacher's)."""
        keep = mask_BT.bool()
        return keep & (ids_BT != self.bos_id) if self.bos_id is not None else keep

    def forward(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor,
                at: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        """Document vectors [B, d_out]; with `at` = (rows [N], positions [N]) also the token
        predictions there [N, d_out] (the output layer runs on those tokens only)."""
        h = self.hidden(ids_BT, mask_BT)
        keep = self.content(ids_BT, mask_BT).unsqueeze(-1).to(h.dtype)
        pooled = masked_mean(h, keep)
        doc = self.out(pooled)
        return doc if at is None else (doc, self.out(h[at]))


def masked_mean(x_BTD: torch.Tensor, keep_BT1: torch.Tensor) -> torch.Tensor:
    """Mean over the kept positions; a row with none (an empty document) gives zeros."""
    return (x_BTD * keep_BT1).sum(1) / keep_BT1.sum(1).clamp(min=1)


@torch.no_grad()
def init_embeddings_from(model: StudentModel, teacher_embed_VD: torch.Tensor) -> None:
    """Start the token table from the teacher's embeddings reduced to d_embed by PCA, scaled to
    unit variance per entry: related tokens start close, and tokens a small corpus never shows
    still get the teacher's idea of them instead of noise."""
    w = teacher_embed_VD.detach().float().cpu()
    rows, k = min(w.shape[0], model.vocab_size), model.cfg.d_embed
    mean = w.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(w - mean, q=min(k, w.shape[1]), center=False, niter=2)
    reduced = (w[:rows] - mean) @ v
    reduced /= reduced.std().clamp(min=1e-8)
    model.embed.weight[:rows, :reduced.shape[1]] = reduced.to(model.embed.weight)
