"""How much a student's agreement numbers depend on the held-out split and on the dictionary.

The agreement table gives the provenance AUC on one fixed split (20% of each class, seed 0) and
its mean over 30 random splits, and the top-20 overlap on the starter dictionary. This prints,
for a trained student:
- the teacher's and the student's held-out contrast AUC over `--splits` random splits (mean,
  standard deviation, range), beside split 0, and the AUC of the teacher's contrast vector on
  the student's vectors (with how far apart the classes lie along it in each space);
- in bands of the teacher's principal directions: the student's agreement there, the share of
  the teacher's machine-vs-human gap it keeps, and the AUC of each band alone;
- the in-distribution top-20 overlap on the starter dictionary, on random unit directions of the
  same and of the seed's size (16,384), and with the student's vectors moved a fraction of the
  way to the teacher's (what agreement the seed's 0.60 needs on this dictionary);
- with `--dictionary DIR` (repeatable), the correlation and overlap in and out of distribution,
  and at chance, on other dictionaries of the student's layer (e.g. one of 16,384 features:
  `distillscope train tests/bench/mixed-topk-16384.toml`, then `distillscope export` of its
  last checkpoint).

    .venv/bin/python tests/bench/agreement_spread.py --student RUN/artifacts/student [--splits 30]
        [--teacher-layers embed,0,2,4,6,12] [--dictionary DIR]

Measured on the demo student (README, "How much these two numbers depend on chance").
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True, help="a trained student folder")
    ap.add_argument("--splits", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dictionary", action="append", default=[],
                    help="another dictionary folder at the student's layer (repeatable)")
    ap.add_argument("--teacher-layers", default="",
                    help="e.g. embed,0,2,4,6,12: also the teacher's contrast AUC at these layers "
                         "('embed': its token embeddings; each z-normalized on the set)")
    args = ap.parse_args()

    import torch

    from core.agreement import chance_agreement, feature_correlation, feature_scores, row_cosines, top_k_overlap
    from core.contrast import auc, evaluate_contrast, held_out_aucs, split_held_out
    from core.dictionaries import load
    from core.features import STARTER_DICTIONARY
    from core.features.scoring import unit_directions
    from core.models import load_teacher
    from core.student import Student
    from core.similarity import zscore
    from core.student.evaluation import (CONTRAST_HELD_OUT, check_dictionary, default_sets, set_vectors,
                                         teacher_pooled, teacher_precision)

    torch.set_num_threads(args.threads)
    student = Student.load(args.student)
    teacher = load_teacher("bundled", device="cpu")
    sets = {s.key: s for s in default_sets(student)[0]}

    contrast = sets["contrast"]
    labels = [d.label or "" for d in contrast.documents]
    spaces = dict(zip(("teacher", "student"), set_vectors(student, teacher, contrast)))
    print(f"contrast AUC, {contrast.positive} vs the rest, {len(labels)} documents, "
          f"{CONTRAST_HELD_OUT:.0%} of each class held out:")
    for space, z in spaces.items():
        aucs = held_out_aucs(z, labels, contrast.positive, contrast.negative, CONTRAST_HELD_OUT, args.splits)
        print(f"  {space:8s} split 0: {aucs[0]:.3f}   {args.splits} splits: {aucs.mean():.3f} "
              f"+- {aucs.std():.3f} ({aucs.min():.3f}-{aucs.max():.3f})")
    # The teacher's contrast vector (built on each split's training rows) scoring the student's
    # held-out vectors: is the student's AUC a matter of its direction, or of its signal?
    crossed, gap = [], {"teacher": [], "student": []}
    is_pos = torch.tensor([lab == contrast.positive for lab in labels])
    in_contrast = is_pos | torch.tensor([contrast.negative is None or lab == contrast.negative for lab in labels])
    for seed in range(args.splits):
        held = split_held_out(labels, CONTRAST_HELD_OUT, seed)
        cv = evaluate_contrast(spaces["teacher"], labels, contrast.positive, contrast.negative, held).contrast
        test = held & in_contrast
        crossed.append(auc(spaces["student"][test] @ cv.vector, is_pos[test]))
        for space, z in spaces.items():
            score = z @ cv.vector
            gap[space].append(float(score[is_pos].mean() - score[~is_pos].mean()))
    print(f"  the teacher's contrast vector on the student's vectors: {sum(crossed) / len(crossed):.3f}; "
          f"class means along it {sum(gap['student']) / len(gap['student']):.2f} apart in the student, "
          f"{sum(gap['teacher']) / len(gap['teacher']):.2f} in the teacher")

    for layer in [x.strip() for x in args.teacher_layers.split(",") if x.strip()]:
        if layer == "embed":  # the bag of the teacher's token embeddings (BOS left out)
            table = teacher.model.get_input_embeddings().weight.detach().float()
            ids = teacher.tokenize([d.text for d in contrast.documents], student.max_length)
            raw = torch.stack([table[torch.as_tensor(i[1:])].mean(0) for i in ids])
            what = "'s token embeddings, mean-pooled"
        else:
            raw = teacher_pooled(teacher, contrast.documents, f"resid_post.{layer}", student.max_length,
                                 precision=teacher_precision(student))
            what = f" after block {layer}"
        z = zscore(raw, raw.mean(0), raw.std(0), 1e-6)
        aucs = held_out_aucs(z, labels, contrast.positive, contrast.negative, CONTRAST_HELD_OUT, args.splits)
        print(f"  the teacher{what} (z-normalized on this set): {aucs.mean():.3f} +- {aucs.std():.3f}")

    t, s = set_vectors(student, teacher, sets["id"])
    principal_bands(spaces, is_pos, labels, contrast, t, s, args.splits)
    starter = unit_directions(load(STARTER_DICTIONARY)).float()
    gen = torch.Generator().manual_seed(0)

    def random_directions(n):
        r = torch.randn(n, starter.shape[1], generator=gen)
        return r / r.norm(dim=1, keepdim=True)

    def overlap(student_z, directions):
        return top_k_overlap(feature_scores(t, directions), feature_scores(student_z, directions), 20)[0]

    print(f"top-20 overlap, in distribution ({len(t)} held-out documents):")
    print(f"  starter dictionary ({len(starter):,} features): {overlap(s, starter):.3f}")
    for n in (len(starter), 16_384):
        print(f"  {n:,} random unit directions: {overlap(s, random_directions(n)):.3f}")
    for a in (0.1, 0.2, 0.3):
        moved = s + a * (t - s)
        print(f"  student moved {a:.0%} of the way to the teacher: cosine "
              f"{row_cosines(t, moved).mean():.3f}, overlap {overlap(moved, starter):.3f}")

    if not args.dictionary:
        return
    ood = set_vectors(student, teacher, sets["ood"])
    for folder in args.dictionary:
        sae = load(folder)
        check_dictionary(student, sae)
        directions = unit_directions(sae).float()
        print(f"{folder} ({len(directions):,} features): correlation, top-20 overlap (chance)")
        for name, (tz, sz) in (("in distribution", (t, s)), ("out of distribution", ood)):
            ft, fs = feature_scores(tz, directions), feature_scores(sz, directions)
            chance = chance_agreement(tz, sz, directions)
            print(f"  {name:20s} {feature_correlation(ft, fs)[0]:.3f} ({chance['correlation']:.3f}), "
                  f"{top_k_overlap(ft, fs, 20)[0]:.3f} ({chance['overlap']:.3f})")


def principal_bands(spaces, is_pos, labels, contrast, t_held, s_held, splits,
                    bands=((0, 8), (8, 32), (32, 128), (128, 320), (320, None))) -> None:
    """Where the student loses the contrast: in bands of the principal directions of the teacher's
    held-out (in-distribution) vectors, the student's per-document correlation with the teacher
    there, the share of the teacher's class-mean gap it keeps, and each space's contrast AUC built
    from that band alone (mean over the random splits)."""
    import torch

    from core.agreement import feature_correlation
    from core.contrast import held_out_aucs
    from core.student.evaluation import CONTRAST_HELD_OUT

    mean = t_held.mean(0)
    _, _, v = torch.linalg.svd(t_held - mean, full_matrices=False)
    held = {"teacher": (t_held - mean) @ v.T, "student": (s_held - mean) @ v.T}
    pcs = {space: (z - mean) @ v.T for space, z in spaces.items()}
    sd = held["teacher"].std(0)
    r_per_direction = feature_correlation(held["teacher"].T, held["student"].T)[1]  # across documents
    print(f"by principal directions of the teacher's held-out vectors ({splits} splits):")
    print(f"  {'directions':>10} {'r held-out':>10} {'gap kept':>9} {'AUC teacher':>12} {'AUC student':>12}")
    for lo, hi in bands:
        band = slice(lo, hi)
        r = r_per_direction[band].mean()
        gap = {space: (p[is_pos].mean(0) - p[~is_pos].mean(0))[band] / sd[band] for space, p in pcs.items()}
        kept = (gap["teacher"] * gap["student"]).sum() / (gap["teacher"] ** 2).sum()
        aucs = [held_out_aucs(pcs[space][:, band], labels, contrast.positive, contrast.negative,
                              CONTRAST_HELD_OUT, splits).mean() for space in ("teacher", "student")]
        print(f"  {f'{lo}-{hi or v.shape[0]}':>10} {float(r):>10.3f} {float(kept):>9.2f} "
              f"{float(aucs[0]):>12.3f} {float(aucs[1]):>12.3f}")


if __name__ == "__main__":
    main()
