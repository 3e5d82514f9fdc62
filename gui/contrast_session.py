"""The Contrast tab's controller: builds contrast vectors from the open corpus on worker threads,
on the teacher's document vectors (z-normalized against the corpus, at the window's layer) or on
a loaded student's, shows their held-out ROC, histograms and dictionary features, saves them, and
classifies pasted text.

Work runs on the window's threads (gui/worker.py): document vectors of the corpus on `runner`
(the teacher's are the ones the Inspect tab already has; a student's are computed once per
corpus), the contrast itself and classification on `inspector`, saving on `io`.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject, Signal

from gui.contrast_view import ContrastResult, ContrastView
from gui.feature_session import DOC_MAX_LENGTH
from gui.worker import Task

HELD_OUT = 0.2  # fraction of each class held out for the AUC and the ROC


class Space:
    """Document vectors of the corpus in one space, and how to put a new text there."""

    def __init__(self, key: str, name: str, ids, z, hook: str, embed, reference=None):
        self.key, self.name, self.ids, self.z, self.hook = key, name, ids, z, hook
        self.embed = embed  # (text, state) -> [D] z-vector in this space; runs on a worker
        self.reference = reference  # (mean, std) raw vectors were z-normalized with, if any


def evaluate(space: Space, labels: list, positive: str, negative: str, name: str, corpus: str, sae,
             sae_hook: str, state):
    """(ContrastEvaluation, feature values or None, note) for the view; runs on a worker."""
    from core.contrast import contrast_features, evaluate_contrast, split_held_out

    neg = None if negative == "rest" else negative
    rows = [i for i, lab in enumerate(labels) if lab]  # unlabeled documents take no side
    z = space.z[rows]
    labs = [labels[i] for i in rows]
    ev = evaluate_contrast(z, labs, positive, neg, split_held_out(labs, HELD_OUT),
                           name=name, space=space.name, corpus=corpus)
    ev.contrast.hook = space.hook
    if space.reference is not None:  # saved with it, so `distillscope classify` can score new text
        ev.contrast.mean, ev.contrast.std = space.reference
    state.check_cancelled()
    if sae is None:
        return ev, None, "Open a dictionary to see which features make up the contrast."
    if sae_hook != space.hook:
        return ev, None, (f"The dictionary reads {sae_hook}; the contrast is at {space.hook}. "
                          "Set the layer to the dictionary's to see its features.")
    values = contrast_features(ev.contrast, sae).values.numpy()
    return ev, values, ("Projection of the unit contrast vector on the dictionary's unit decoder "
                        "directions (seed 000): features the class points towards are positive.")


def head_split(ids, labels: list, texts: dict, positive: str, negative: str):
    """(train texts, train 0/1, held-out texts, held-out 0/1) on the split `evaluate` uses, so
    the head and the contrast vector are scored on the same held-out documents."""
    from core.contrast import REST, split_held_out

    rows = [i for i, lab in enumerate(labels) if lab]
    held = split_held_out([labels[i] for i in rows], HELD_OUT).tolist()
    out = ([], [], [], [])
    for i, is_held in zip(rows, held):
        lab = labels[i]
        if lab != positive and negative != REST and lab != negative:
            continue  # a third class: on neither side of this contrast
        part = 2 if is_held else 0
        out[part].append(texts[ids[i]])
        out[part + 1].append(int(lab == positive))
    return out


class ContrastSession(QObject):
    computed = Signal()  # a contrast is on screen
    classified = Signal()
    head_done = Signal()

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.view = ContrastView()
        self.evaluation = None
        self._student_z: dict = {}  # (student id, corpus gen) -> z [N, D]
        self.view.compute_requested.connect(self.compute)
        self.view.classify_requested.connect(self.classify)
        self.view.save_requested.connect(self.save)
        self.view.export_requested.connect(self.export_dialog)
        self.view.feature_activated.connect(self._open_feature)
        self.view.head_requested.connect(self.finetune_head)
        for signal in (window.corpus_changed, window.teacher_changed, window.student_changed):
            signal.connect(self.refresh_choices)
        window.vectors_ready.connect(self._vectors_arrived)
        self._waiting = None  # the compute that waits for the corpus' teacher vectors
        self.refresh_choices()

    # ------------------------------------------------------------------ choices

    def refresh_choices(self) -> None:
        w = self.window
        spaces = []
        if w.teacher is not None:
            spaces.append(("teacher", f"Teacher, resid_post.{w.layer}"))
        if w.student is not None:
            spaces.append(("student", f"Student ({w.student_name})"))
        counts: dict[str, int] = {}
        for doc in w.corpus.documents:
            if doc.label:
                counts[doc.label] = counts.get(doc.label, 0) + 1
        self.view.set_choices(spaces, sorted(counts.items()))

    # ------------------------------------------------------------------ compute

    def _space(self, key: str, ready) -> Optional[Space]:
        """The corpus' vectors in a space, or None after starting what computes them (then
        `ready` runs again when they are in)."""
        w = self.window
        if key == "teacher":
            cv = w._vectors.get(w.layer)
            if cv is None:
                self.view.show_busy(f"Computing the corpus' document vectors at layer {w.layer} "
                                    "(see the status bar)…")
                self._waiting = ready
                w._schedule_extraction()
                return None
            shadow, layer, mean, std = w.shadow, w.layer, cv.mean, cv.std

            def embed(text, state):
                from core.activations import document_activations
                from core.models import HookPoint
                from core.similarity import zscore

                doc = document_activations(shadow, text, HookPoint("resid_post", layer), DOC_MAX_LENGTH, state)
                return zscore(doc.pooled(), mean, std)

            return Space("teacher", f"teacher resid_post.{layer} {w.teacher.fingerprint[:16]}",
                         cv.ids, cv.z, f"resid_post.{layer}", embed, (mean, std))
        student = w.student
        key_z = (id(student), w._gen)
        z = self._student_z.get(key_z)
        if z is None:
            texts = [d.text for d in w.corpus.documents]

            def done(vectors) -> None:
                self._student_z = {key_z: vectors}
                ready()

            w.runner.submit(Task("student-vectors", lambda state: student.vectors(texts, state),
                                 title=f"Student vectors of {len(texts):,} documents", on_result=done,
                                 on_error=lambda what, hint: self.view.show_error(f"{what} {hint}")))
            self.view.show_busy("Computing the student's vectors of the corpus…")
            return None
        return Space("student", f"student {w.student_name}", [d.id for d in w.corpus.documents], z,
                     student.hook, lambda text, state: student.vectors([text], state)[0])

    def _vectors_arrived(self, _layer: int) -> None:
        self.refresh_choices()
        ready, self._waiting = self._waiting, None
        if ready is not None:
            ready()

    def compute(self, space_key: str, positive: str, negative: str, name: str) -> None:
        w = self.window
        space = self._space(space_key, lambda: self.compute(space_key, positive, negative, name))
        if space is None:
            return
        by_id = {d.id: d.label for d in w.corpus.documents}
        labels = [by_id.get(i) or "" for i in space.ids]
        d = w.features.dictionary
        usable = d is not None and d.fit_error is None and d.hook is not None
        sae, sae_hook = (d.sae, d.hook.name) if usable else (None, "")
        labels_of = d.labels.get if d is not None else (lambda f: "")
        corpus, gen = w.corpus.name, w._gen
        self.view.show_busy("Computing the contrast…")

        def done(result) -> None:
            if gen != w._gen:
                return
            ev, values, note = result
            self.evaluation, self.space, self.labels = ev, space, labels
            self.view.clear_head(space.key == "student")
            self.view.verdict.setText("")  # it was the previous contrast's
            cv = ev.contrast
            neg = cv.negative
            self.view.show_result(ContrastResult(
                cv.name, cv.positive, neg, space.name, ev.held_out_auc, cv.train_auc or float("nan"),
                ev.fpr.tolist(), ev.tpr.tolist(), {k: v.tolist() for k, v in ev.scores.items()},
                cv.threshold, (cv.n_per_class.get(cv.positive, 0), cv.n_per_class.get(neg, 0)),
                (ev.n_held_out.get(cv.positive, 0), ev.n_held_out.get(neg, 0)),
                values, labels_of, note))
            self.computed.emit()

        w.inspector.submit(Task("contrast", lambda state: evaluate(space, labels, positive, negative, name,
                                                                   corpus, sae, sae_hook, state),
                                on_result=done, on_error=lambda what, hint: self.view.show_error(f"{what} {hint}")))

    # ------------------------------------------------------------------ use

    def classify(self, text: str) -> None:
        if self.evaluation is None:
            return
        cv, space = self.evaluation.contrast, self.space

        def run(state):
            z = space.embed(text, state)
            return float(cv.score(z)), cv.classify(z)[0]

        def done(result) -> None:
            score, label = result
            self.view.show_classified(score, label, cv.threshold,
                                      f"{space.name}; the positive side is {cv.positive}")
            self.classified.emit()

        self.view.verdict.setText("Classifying…")
        self.window.inspector.submit(Task("classify", run, on_result=done,
                                          on_error=lambda what, hint: self.view.verdict.setText(f"{what} {hint}")))

    def finetune_head(self) -> None:
        """The seed's supervised comparison: a copy of the student fine-tuned with a linear head on
        the contrast's training split, its ROC on the same held-out documents."""
        w = self.window
        if self.evaluation is None or self.space.key != "student" or w.student is None:
            return
        student, cv = w.student, self.evaluation.contrast
        texts = {d.id: d.text for d in w.corpus.documents}
        split = head_split(self.space.ids, self.labels, texts, cv.positive, cv.negative)

        def run(state):
            from core.contrast import roc_curve
            from core.student.classify_head import finetune_classifier

            result = finetune_classifier(student, *split, state=state)
            fpr, tpr, _ = roc_curve(result.scores, split[3])
            return result.auc, fpr.tolist(), tpr.tolist(), result.steps

        self.view.head_button.setEnabled(False)
        self.view.show_busy("Fine-tuning a copy of the student with a classification head (progress in the "
                            "status bar)…")
        w.runner.submit(Task("classify-head", run, title="Fine-tuning a classification head",
                             on_result=lambda r: (self.view.show_head(*r), self.head_done.emit()),
                             on_error=lambda what, hint: self.view.show_error(f"{what} {hint}")))

    def save(self) -> None:
        if self.evaluation is None:
            return
        cv = self.evaluation.contrast

        def run(_state):
            from core.contrast import contrasts_dir

            return str(cv.save(contrasts_dir()))

        self.window.io.submit(Task("save-contrast", run, on_result=self.view.mark_saved,
                                   on_error=lambda what, hint: self.view.show_error(f"{what} {hint}")))

    def export_dialog(self) -> None:
        if not (self.view.result is None):
            self.export("")

    def export(self, path: str) -> str:
        """CSV or PNG by suffix; asks for the file when `path` is empty."""
        from gui.dialogs import export_view

        return export_view(self.window, self.view, "Export the contrast", "contrast.csv", path)

    def _open_feature(self, feature: int) -> None:
        self.window.features.open_dashboard(feature)
