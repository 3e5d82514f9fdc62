"""Loss recovered: how much of the teacher's next-token loss survives an SAE's reconstruction.

The activation x at a hook is replaced by the SAE's reconstruction, by zeros or by the mean
activation, and the teacher's next-token cross-entropy (CE) is compared with the clean run:

    loss_recovered_zero = (ce_zero - ce_sae) / (ce_zero - ce_clean)    1: as good as the clean model
    loss_recovered_mean = (ce_mean - ce_sae) / (ce_mean - ce_clean)    0: no better than the ablation

Which positions are spliced: every non-pad token except BOS, in all three conditions. BOS keeps
its clean activation because the SAE never saw it (extraction leaves BOS out: its norm dwarfs
every other token's), and every later token attends to it as a sink. SAELens' evals leave
special tokens clean for the reconstruction too, but zero-ablate every position; zeroing BOS
breaks the model for reasons the dictionary is not asked to carry, inflates ce_zero and so
flatters loss recovered. Splicing the same positions everywhere compares like with like.
Pad positions (right padding) are never read by real tokens, so they are left alone.

CE is averaged over every predicted real token (position t predicts token t+1, pads excluded),
including the prediction made at BOS, which is the same in every condition and so cancels in
the differences.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from core.activations import ActivationCache, content_mask, pad_batch, plan_batches
from core.dictionaries.base import SAE, DictionaryError
from core.models import HookPoint, Teacher, _first, _mlp
from core.progress import TaskState

CONDITIONS = ("clean", "sae", "zero", "mean")


def _texts(documents: Sequence) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in documents]


def _resolve_hook(sae: SAE, hook: Optional[HookPoint | str]) -> HookPoint:
    own = sae.cfg.hook_name
    if hook is None:
        try:
            return HookPoint.parse(own)
        except ValueError:
            raise DictionaryError(f"The SAE does not say where it reads (hook_name '{own}').",
                                  "Pass the hook, e.g. resid_post.6.")
    hook = HookPoint.parse(hook) if isinstance(hook, str) else hook
    try:
        if own and HookPoint.parse(own) != hook:
            raise DictionaryError(f"The SAE was trained on {own}, not {hook.name}.",
                                  f"Evaluate it at {own}, or choose an SAE trained at {hook.name}.")
    except ValueError:
        pass  # a SAELens-style name (blocks.6.hook_resid_post): trust the caller's hook
    return hook


def _mean_vector(mean_activation, hook: HookPoint, d: int) -> Optional[torch.Tensor]:
    if mean_activation is None:
        return None
    if isinstance(mean_activation, ActivationCache):
        if mean_activation.hook != hook:
            raise DictionaryError(f"The activation cache holds {mean_activation.hook.name}, not {hook.name}.",
                                  "Use a cache extracted at the SAE's hook, or leave it out.")
        if mean_activation.manifest["key"]["settings"].get("include_bos"):
            raise DictionaryError("The activation cache includes BOS rows, so its mean is dominated "
                                  "by BOS.", "Use a cache extracted without BOS, or leave it out.")
        mean_activation = mean_activation.stats()[0]
    mean = torch.as_tensor(mean_activation, dtype=torch.float32).reshape(-1)
    if mean.numel() != d:
        raise DictionaryError(f"The mean activation has {mean.numel()} values, but {hook.name} is "
                              f"{d} wide.", "Pass the mean of activations at the same hook.")
    return mean


def _splice(teacher: Teacher, hook: HookPoint, fn: Callable[[torch.Tensor], Optional[torch.Tensor]]):
    """Register a hook that hands the activation to `fn` and substitutes what it returns."""
    block = teacher.layers[hook.layer]
    if hook.kind == "mlp_in":
        def pre(module, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])
        return _mlp(block).register_forward_pre_hook(pre)

    def post(module, args, output):
        # Decoder layers return a tensor in recent transformers and a tuple in older ones.
        new = fn(_first(output))
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, (tuple, list)) else new
    module = block if hook.kind == "resid_post" else _mlp(block)
    return module.register_forward_hook(post)


def _ce_sum(teacher: Teacher, ids: torch.Tensor, mask: torch.Tensor, state: TaskState) -> float:
    """Summed next-token CE over real targets of one padded batch."""
    ids, mask = ids.to(teacher.device), mask.to(teacher.device)
    predicts = torch.zeros_like(mask, dtype=torch.bool)
    predicts[:, :-1] = mask[:, 1:].bool()  # position t predicts a real token t + 1
    targets = ids[:, 1:][mask[:, 1:].bool()]
    handles = [b.register_forward_pre_hook(lambda m, a: state.check_cancelled()) for b in teacher.layers]
    # The head is vocabulary-wide (262k for Gemma: most of the cost on a CPU); feed it only the
    # positions that predict something. Anything after it (Gemma 2's soft-capping) is elementwise.
    head = teacher.model.get_output_embeddings()
    if head is not None:
        handles.append(head.register_forward_pre_hook(lambda m, a: (a[0][predicts].unsqueeze(0), *a[1:])))
    try:
        logits = teacher.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    logits = logits[0] if head is not None else logits[predicts]
    return float(F.cross_entropy(logits.float(), targets, reduction="sum"))


def _recovered(ce_ablated: float, ce_sae: float, ce_clean: float) -> float:
    gap = ce_ablated - ce_clean
    return (ce_ablated - ce_sae) / gap if abs(gap) > 1e-9 else float("nan")


@torch.no_grad()
def loss_recovered(
    teacher: Teacher,
    sae: SAE,
    documents: Sequence,
    hook: Optional[HookPoint | str] = None,
    max_length: int = 128,
    batch_tokens: int = 2048,
    max_tokens: Optional[int] = None,
    mean_activation: Optional[torch.Tensor | ActivationCache] = None,
    state: Optional[TaskState] = None,
) -> dict:
    """Next-token CE of `teacher` on `documents` (objects with .text, or strings), clean and
    with the activation at `hook` (default: the SAE's hook_name) replaced by the SAE's
    reconstruction, by zeros and by the mean activation.

    max_tokens: use only the first documents whose tokens add up to about this many.
    mean_activation: a [d] vector or an ActivationCache (its stats' mean). Without one, the mean
    over the evaluated content tokens is used (taken during the clean pass; the mean-ablated
    pass then runs after all the others).

    Returns ce_clean, ce_sae, ce_zero, ce_mean (nats per predicted token), loss_recovered_zero,
    loss_recovered_mean, n_tokens (predicted tokens), n_spliced (positions replaced),
    n_documents, hook. Raises DictionaryError when the SAE's width is not the hook's.
    """
    state = state or TaskState()
    hook = _resolve_hook(sae, hook)
    teacher.check_hook(hook)
    d = teacher.d_model  # the residual, the MLP's (normed) input and its output share this width
    if sae.d_in != d:
        raise DictionaryError(f"The SAE reads d_in = {sae.d_in}, but {hook.name} of {teacher.name} "
                              f"is {d} wide.", "Choose an SAE trained on this model and hook.")
    mean = _mean_vector(mean_activation, hook, d)

    token_lists = teacher.tokenize(_texts(documents), max_length)
    if max_tokens is not None:  # a prefix of the documents, in the order given
        total = 0
        for n, tokens in enumerate(token_lists):
            total += len(tokens)
            if total >= max_tokens:
                token_lists = token_lists[: n + 1]
                break
    token_lists = [t for t in token_lists if len(t) >= 2]  # a lone BOS predicts nothing
    if not token_lists:
        raise DictionaryError("There is no text to evaluate on.", "Give documents with some text.")
    batches = [pad_batch([token_lists[i] for i in b], teacher.pad_id)
               for b in plan_batches([len(t) for t in token_lists], batch_tokens)]

    was_training = sae.training
    sae.eval()  # BatchTopK uses its inference threshold
    sae_device, sae_dtype = sae.W_enc.device, sae.W_enc.dtype
    sums = dict.fromkeys(CONDITIONS, 0.0)
    mean_sum = torch.zeros(d, dtype=torch.float64)
    n_tokens = n_spliced = 0
    # Without a given mean, the mean pass needs every batch's clean activations first.
    sweeps = [CONDITIONS] if mean is not None else [CONDITIONS[:3], CONDITIONS[3:]]
    total_passes, passes = len(batches) * len(CONDITIONS), 0

    def replacement(condition: str, keep: torch.Tensor):
        def fn(x: torch.Tensor) -> Optional[torch.Tensor]:
            if condition == "clean":
                if mean is None:
                    mean_sum.add_(x[keep].double().sum(0).cpu())
                return None
            if condition == "sae":
                new = sae(x.to(device=sae_device, dtype=sae_dtype))[0]
            elif condition == "zero":
                new = torch.zeros_like(x)
            else:
                new = mean.expand_as(x)
            return torch.where(keep.unsqueeze(-1), new.to(device=x.device, dtype=x.dtype), x)
        return fn

    try:
        for sweep in sweeps:
            if mean is None and "mean" in sweep:
                mean = (mean_sum / max(n_spliced, 1)).float()
            for ids, mask in batches:
                keep = content_mask(ids, mask, teacher.bos_id).to(teacher.device)
                for condition in sweep:
                    state.check_cancelled()
                    handle = _splice(teacher, hook, replacement(condition, keep))
                    try:
                        sums[condition] += _ce_sum(teacher, ids, mask, state)
                    finally:
                        handle.remove()
                    passes += 1
                    state.report(passes, total_passes, f"Loss recovered: {condition} pass "
                                 f"{passes:,}/{total_passes:,}")
                if sweep is sweeps[0]:
                    n_tokens += int(mask[:, 1:].sum())
                    n_spliced += int(keep.sum())
    finally:
        sae.train(was_training)

    ce = {c: sums[c] / n_tokens for c in CONDITIONS}
    return {
        "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"], "ce_mean": ce["mean"],
        "loss_recovered_zero": _recovered(ce["zero"], ce["sae"], ce["clean"]),
        "loss_recovered_mean": _recovered(ce["mean"], ce["sae"], ce["clean"]),
        "n_tokens": n_tokens, "n_spliced": n_spliced, "n_documents": len(token_lists),
        "hook": hook.name,
    }


__all__ = ["loss_recovered"]
