"""The student commands of the CLI (seed 000): `distillscope agreement` (how close a student is to
its teacher, the seed's table) and `distillscope classify` (provenance score and label of a text
by a contrast vector, on the teacher's or a student's vectors). Registered by core.cli."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import DistillscopeError

CLASSIFY_MAX_LENGTH = 256  # tokens per document, as the demo sets' vectors were taken
DEFAULT_HOOK = "resid_post.6"  # where the teacher's contrast is built (the starter dictionary's layer)


def add_parsers(sub) -> dict:
    p = sub.add_parser("agreement", help="how closely a student agrees with its teacher (seed 000's table)",
                       description="Teacher and student document vectors of the same documents, in "
                                   "the student's z-space: mean cosine, the correlation of all "
                                   "dictionary feature scores, top-20 feature overlap, and a "
                                   "contrast vector's held-out AUC in each space; on the student's "
                                   "held-out documents (in distribution), the provenance demo "
                                   "(machine vs human) and the stdlib docstrings demo (out of "
                                   "distribution). Writes agreement.json into the student folder, "
                                   "where the app's Agreement tab reads it.")
    p.add_argument("student", nargs="?", default="student",
                   help="a student folder (a run folder or its artifacts/student); default: the newest "
                        "finished student run")
    p.add_argument("--dictionary", metavar="DIR", default=None,
                   help="a dictionary at the student's layer (default: the starter dictionary)")
    p.add_argument("--id-corpus", default=None,
                   help="in-distribution documents (default: the held-out split of the student's "
                        "training corpus)")
    p.add_argument("--contrast-corpus", default="demo-provenance",
                   help="a labelled corpus for the contrast AUC, or 'none' (default demo-provenance)")
    p.add_argument("--positive", default="machine", help="the contrast's positive class (default machine)")
    p.add_argument("--negative", default="human", help="its negative class, or 'rest' (default human)")
    p.add_argument("--ood", default="demo-ood", help="out-of-distribution documents, or 'none' (default demo-ood)")
    p.add_argument("-k", type=int, default=20, help="top-k for the feature overlap (default 20, as the seed)")
    p.add_argument("--worst", type=int, default=0, metavar="N",
                   help="also list, per set, the N documents of lowest cosine (where the student "
                        "reads least like its teacher)")
    p.add_argument("--json", action="store_true", help="print agreement.json instead of the table")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")

    p = sub.add_parser("classify", help="the provenance score and label of texts (machine or human)",
                       description="Scores each document with a contrast vector: by default the "
                                   "machine-vs-human contrast of the provenance demo, built on "
                                   "the chosen model's vectors (80% of each class; the held-out AUC "
                                   "on the other 20% is printed), or a contrast saved from the app. "
                                   "Prints the score, the threshold chosen on the training rows and "
                                   "the label.")
    p.add_argument("file", help="a text file (a .jsonl/.csv/.tsv file or a folder classifies every "
                                "document in it), or '-' for standard input")
    p.add_argument("--model", default="teacher",
                   help="'teacher' (the bundled teacher, default), 'student' (the newest finished student "
                        "run) or a student folder")
    p.add_argument("--contrast", default=None, metavar="FILE",
                   help="a saved contrast (.contrast.safetensors, or its name in the app's contrasts "
                        "folder) instead of building the provenance one")
    p.add_argument("--corpus", default="demo-provenance", help="the labelled corpus to build the contrast "
                                                               "from (default demo-provenance)")
    p.add_argument("--positive", default="machine", help="positive class (default machine)")
    p.add_argument("--negative", default="human", help="negative class, or 'rest' (default human)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    return {"agreement": cmd_agreement, "classify": cmd_classify}


def _none(value):
    return None if value in (None, "", "none") else value


def _load_student(name: str, device=None):
    from core.cli import _student_model

    student = _student_model(name)
    if student is None:
        raise DistillscopeError(f"'{name}' is not a student folder.",
                                "Pass a folder a student job wrote (RUN or RUN/artifacts/student), "
                                "or 'student' for the newest finished one.")
    return student.to(device or "cpu")


def _teacher_of(student, device, state):
    from core.models import load_teacher

    source = student.teacher.get("source") or "bundled"
    teacher = load_teacher(source, device=device, state=state)
    want = student.teacher.get("fingerprint")
    if want and teacher.fingerprint[:len(want)] != want:
        raise DistillscopeError(f"The student was distilled from a teacher with fingerprint {want}; "
                                f"'{source}' now loads one with {teacher.fingerprint[:len(want)]}.",
                                "Point the student at its own teacher (the model files have changed).")
    return teacher


def cmd_agreement(args) -> int:
    from core.cli import _open_dictionary, _progress_bar
    from core.progress import TaskState
    from core.student.evaluation import default_sets, evaluate_agreement, set_documents

    if args.k < 1:
        raise DistillscopeError("-k must be at least 1.", "e.g. -k 20")
    if args.worst < 0:
        raise DistillscopeError("--worst must be 0 or more.", "e.g. --worst 10")
    student = _load_student(args.student, args.device)
    folder, sae = _open_dictionary(args.dictionary)
    sets, seen = default_sets(student, args.id_corpus, _none(args.contrast_corpus), args.positive,
                              None if args.negative == "rest" else args.negative, _none(args.ood))
    bar, update = _progress_bar()
    state = TaskState(update)
    try:
        teacher = _teacher_of(student, args.device, state)
        result = evaluate_agreement(student, teacher, sae.to("cpu"), sets, state, args.k, seen, folder.name)
    finally:
        bar.close()
    path = result.save(student.folder)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(result.table())
        if args.worst:
            print(result.worst_table(args.worst, set_documents(sets)))
        print(f"\nwrote {path} in {result.seconds:.1f} s")
    return 0


def _contrast_file(name: str) -> Path:
    from core.contrast import SUFFIX, contrasts_dir

    path = Path(name)
    if path.is_file():
        return path
    saved = contrasts_dir() / (name if name.endswith(SUFFIX) else name + SUFFIX)
    if saved.is_file():
        return saved
    raise DistillscopeError(f"No contrast file '{name}' (nor {saved}).",
                            "Save one from the Contrast tab, or leave out --contrast to build the "
                            "provenance contrast.")


def cmd_classify(args) -> int:
    from core.cli import _progress_bar, _read_file
    from core.progress import TaskState

    documents = _read_file(args.file, "classify").documents
    student = None if args.model == "teacher" else _load_student(args.model, args.device)
    bar, update = _progress_bar()
    state = TaskState(update)
    try:
        if student is not None:
            space = f"student {student.folder}"

            def vectors(docs, hook: str, cached: bool):  # already in the student's z-space
                return student.vectors([d.text for d in docs], state)
        else:
            from core.models import load_teacher
            from core.student.evaluation import teacher_pooled

            teacher = load_teacher("bundled", device=args.device, state=state)
            space = f"teacher {teacher.name}"

            def vectors(docs, hook: str, cached: bool):  # raw pooled residuals
                if cached:  # a labelled corpus, read again on every run
                    return teacher_pooled(teacher, docs, hook, CLASSIFY_MAX_LENGTH, state)
                return _raw_for_new_text(teacher, docs, hook, state)
        if args.contrast:
            cv, note = _saved_contrast(args.contrast, student), "saved contrast"
        else:
            cv, note = _corpus_contrast(args, vectors, normalize=student is None)
        z = cv.normalize(vectors(documents, cv.hook, cached=False))
    finally:
        bar.close()
    scores = cv.score(z).tolist()
    labels = cv.classify(z)
    rows = [{"id": d.id, "score": s, "label": lab} for d, s, lab in zip(documents, scores, labels)]
    if args.json:
        print(json.dumps({"contrast": cv.name, "space": space, "threshold": cv.threshold,
                          "held_out_auc": cv.held_out_auc, "documents": rows}, indent=1, ensure_ascii=False))
        return 0
    print(f"contrast '{cv.name}' on {space} vectors ({note}); "
          f"score >= {cv.threshold:+.3f} means {cv.positive}")
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        print(f"{r['id']:<{width}}  {r['score']:+8.3f}  {r['label']}")
    return 0


def _raw_for_new_text(teacher, documents, hook: str, state):
    """Raw pooled teacher vectors of texts being classified, without writing a cache for them."""
    import torch

    from core.activations import document_activations

    out = []
    for i, d in enumerate(documents):
        state.report(i, len(documents), "Reading the texts")
        out.append(document_activations(teacher, d.text, hook, CLASSIFY_MAX_LENGTH, state, quick=False).pooled())
    return torch.stack(out)


def _saved_contrast(name: str, student):
    from core.contrast import ContrastVector

    path = _contrast_file(name)
    cv = ContrastVector.load(path)
    in_student = cv.space.startswith("student")
    if in_student != (student is not None):
        raise DistillscopeError(f"'{path.name}' was built on {cv.space} vectors.",
                                "Pass --model with a student folder for a student's contrast, "
                                "or --model teacher for a teacher's.")
    if not in_student and (cv.mean is None or not cv.hook):
        raise DistillscopeError(f"'{path.name}' was saved without the normalization of its vectors, "
                                "so a new text cannot be put in its space.",
                                "Save the contrast again from the Contrast tab.")
    return cv


def _corpus_contrast(args, vectors, normalize: bool):
    """The contrast of --positive against --negative built on 80% of each class of --corpus,
    its held-out AUC on the rest. `normalize`: z-score raw (teacher) vectors against the corpus
    and keep that reference with the contrast."""
    from core.contrast import evaluate_contrast, split_held_out
    from core.documents import load_corpus
    from core.similarity import zscore

    docs = [d for d in load_corpus([args.corpus]).documents if d.label]
    labels = [d.label for d in docs]
    hook = DEFAULT_HOOK
    x = vectors(docs, hook, cached=True)
    mean, std = (x.mean(0), x.std(0)) if normalize else (None, None)
    ev = evaluate_contrast(zscore(x, mean, std) if normalize else x, labels, args.positive,
                           None if args.negative == "rest" else args.negative,
                           split_held_out(labels, 0.2), corpus=args.corpus)
    cv = ev.contrast
    cv.hook, cv.mean, cv.std = hook, mean, std
    n = sum(ev.n_held_out.values())
    return cv, (f"built on {sum(cv.n_per_class.values())} documents of '{args.corpus}', "
                f"held-out AUC {ev.held_out_auc:.3f} on {n}")
