"""The Agreement tab's controller: shows the open student's saved evaluation (agreement.json in
its folder, written by the student job or `distillscope agreement`), and re-evaluates it on the
runner thread with the window's teacher and dictionary (cancellable from the status bar). Opens
a listed document in Inspect, beside the student's bars, on request."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from gui.agreement_view import AgreementView
from gui.worker import Task


class AgreementSession(QObject):
    shown = Signal()  # an evaluation is on screen

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.view = AgreementView()
        self.view.evaluate_requested.connect(self.evaluate)
        self.view.export_requested.connect(self.export_dialog)
        self.view.document_requested.connect(self.open_document)
        self._documents: tuple = (None, {})  # (student, its evaluation sets' documents), read once
        for signal in (window.student_changed, window.teacher_changed):
            signal.connect(self.refresh)
        window.features.dictionary_changed.connect(self.refresh)
        self.refresh()

    def _blocker(self) -> str:
        """Why the open student cannot be evaluated now ("" when it can)."""
        w, student = self.window, self.window.student
        if student is None:
            return "Open a student first."
        if w.teacher is None:
            return "Wait for the teacher to load."
        want = student.teacher.get("fingerprint", "")
        if want and not w.teacher.fingerprint.startswith(want):
            return (f"The open model is not this student's teacher ({student.teacher.get('name', want)}); "
                    "open that model first.")
        return ""

    def refresh(self, *_args) -> None:
        student = self.window.student
        if student is None:
            self._documents = (None, {})  # let the closed student go
            self.view.clear()
            self.view.set_student("", False)
            return
        self.view.clear()
        saved = None
        try:
            from core.student.evaluation import AgreementEvaluation

            saved = AgreementEvaluation.load(student.folder) if student.folder is not None else None
        except Exception as exc:  # a damaged file: say so, evaluating again rewrites it
            self.view.show_error(str(getattr(exc, "what", exc)))
        if saved is not None:
            self.view.show_result(saved.to_json())
            self._read_documents()
            self.shown.emit()
        why = self._blocker()
        self.view.set_student(self.window.student_name, not why, why)

    def evaluate(self) -> None:
        w = self.window
        why = self._blocker()
        if why:
            self.view.show_error(why)
            return
        student, teacher = w.student, w.teacher
        d = w.features.dictionary
        sae = d.sae if d is not None and d.fit_error is None and d.hook is not None and \
            d.hook.name == student.hook else None
        dictionary_name = d.name if sae is not None else ""

        def run(state):
            from core.dictionaries import load
            from core.features import STARTER_DICTIONARY
            from core.student.evaluation import default_sets, evaluate_agreement

            # The window's dictionary when it reads the student's layer, else the starter (if it fits)
            used, name = (sae, dictionary_name) if sae is not None else (load(STARTER_DICTIONARY),
                                                                        STARTER_DICTIONARY.name)
            sets, seen = default_sets(student)
            result = evaluate_agreement(student, teacher, used, sets, state, seen_texts=seen, dictionary_name=name)
            if student.folder is not None:
                result.save(student.folder)
            return result.to_json()

        def done(data: dict) -> None:
            if w.student is student:
                self.view.show_result(data)
                self._read_documents()
                self.shown.emit()

        self.view.show_busy("Evaluating: the teacher's and the student's vectors of the held-out, provenance "
                            "and out-of-distribution documents (progress in the status bar)…")
        w.runner.submit(Task("agreement", run, title="Agreement of the student with the teacher",
                             on_result=done, on_error=lambda what, hint: self.view.show_error(f"{what} {hint}")))

    def _read_documents(self) -> None:
        """The evaluated sets' documents, for the least-agreeing list (read off the GUI thread)."""
        student = self.window.student
        if self._documents[0] is student:  # a refresh of the same student: already read
            self.view.set_documents(self._documents[1])
            return

        def run(_state):
            from core.student.evaluation import default_sets, set_documents

            return set_documents(default_sets(student)[0])

        def done(documents: dict) -> None:
            self._documents = (student, documents)
            if self.window.student is student and self.view.data is not None:
                self.view.set_documents(documents)

        task = Task("agreement-documents", run, title="Reading the evaluated documents", on_result=done,
                    on_error=lambda what, hint: self.window.status.set_message(
                        f"The evaluated documents cannot be listed: {what}"))
        task.quiet = True  # the table stands without the texts; the status bar says why
        self.window.io.submit(task)

    def open_document(self, key: str, doc_id: str) -> bool:
        """Show document `doc_id` of set `key` in Inspect (teacher and student bars side by side)."""
        doc = self.view.documents.get(key, {}).get(doc_id)
        if doc is None:
            self.view.show_error(f"The text of '{doc_id}' is not at hand: its corpus may have changed since the "
                                 "evaluation. Evaluate again (Ctrl+E).")
            return False
        title = (self.view.data or {}).get("sets", {}).get(key, {}).get("title", key)
        # Inspect z-normalizes against its own reference, so say what the agreement measured.
        measured = next((f" (cosine {c:.3f}, r {r:.3f}, overlap {o:.2f} in the student's z-space)"
                         for d, c, r, o in self.view.worst_rows(key) if d == doc_id), "")
        self.window.inspect_document(doc, f"{doc_id} of the agreement's {title}{measured}")
        return True

    def export_dialog(self) -> None:
        if not (self.view.data is None):
            self.export("")

    def export(self, path: str) -> str:
        """CSV or PNG by suffix; asks for the file when `path` is empty."""
        from gui.dialogs import export_view

        return export_view(self.window, self.view, "Export the agreement", "agreement.csv", path)
