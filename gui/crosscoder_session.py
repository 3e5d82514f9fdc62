"""The Crosscoder tab's controller: opens a crosscoder folder, loads its base and variant models
when a dashboard or an analysis needs them, and runs every heavy step on its own worker thread
(gui/worker.py) with progress and Cancel on the tab.

What runs where:
  open        Crosscoder.load, report.json (held-out firing frequencies from the training run),
              norm_report: the histograms and the three lists;
  models      core.models.load_teacher for each source the crosscoder records (cfg.model_sources;
              'Models…' replaces a source that moved); the window's teacher is lent (a twin with
              its own modules) when it is the same model;
  corpus      both models over the dashboard documents once (core.crosscoder.dashboard.encode_corpus):
              the crosscoder's training corpus when report.json names it, else the open corpus,
              else the demo set; every latent's dashboard is then computed from it at once;
  analyses    Latent Scaling, ablation, reasoning tags, geometry (core.crosscoder).

Only the worker thread touches the models and the crosscoder's tensors while a task runs; the
GUI thread gets plain results. `selected_direction()` gives the selected latent's decoder row as a
core.steering.Direction; `steer_requested(latent, model)` asks the Steering tab to add it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

from gui.crosscoder_view import ANALYSIS_TITLES, CrosscoderView, dashboard_title
from gui.worker import Task, TaskRunner

DASHBOARD_DOCUMENTS = 200  # documents the dashboards (and Latent Scaling) read
ABLATION_DOCUMENTS = 24  # documents ablated: every one costs (1 + 2 sets) full passes per model
MAX_LENGTH = 64
FLAG_NU_ERROR, FLAG_NU_RECONSTRUCTION = 0.2, 0.5  # as core.crosscoder.analysis (not imported: torch)
BUNDLED = "bundled"


def source_key(source: str) -> str:
    """One key per model: 'bundled', or the resolved path."""
    if source in ("", BUNDLED):
        return source
    return str(Path(source).expanduser().resolve())


class _Work:
    """What the worker tasks keep between tasks: loaded models by source key and the encoded
    dashboard corpus. Written only on the worker thread while a task runs."""

    def __init__(self):
        self.models: dict[str, object] = {}
        self.corpus = None
        self.corpus_key = None
        self.corpus_note = ""
        self.texts: list[tuple[str, str]] = []


def _open_task(folder: str) -> dict:
    """Worker: the crosscoder, its norm report (with report.json's frequencies when they fit)."""
    from core.crosscoder import Crosscoder, norm_report

    cc = Crosscoder.load(folder)
    saved, note, frequency = {}, "", None
    path = Path(folder) / "report.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text("utf-8"))
            if not isinstance(saved, dict):
                raise ValueError("not an object")
            freq = saved.get("frequency")
            if isinstance(freq, list) and len(freq) == cc.d_latent and all(isinstance(f, (int, float)) for f in freq):
                frequency = [float(f) for f in freq]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            saved, note = {}, (f"report.json cannot be read ({exc.__class__.__name__}); frequencies come from the "
                               "dashboard documents once they are read.")
    report = norm_report(cc, frequency=frequency)
    return {"crosscoder": cc, "folder": str(folder), "report": report, "frequency": frequency,
            "saved": {k: saved.get(k) for k in ("corpus", "evaluation", "held_out_tokens", "pair")}, "note": note}


def _models(work: _Work, sources: list[str], lent: dict, state) -> list:
    from core.models import load_teacher

    out = []
    for source in sources:
        key = source_key(source)
        if key not in work.models:
            if key in lent:
                work.models[key] = lent[key]
            else:
                state.report(0, 0, f"Loading {Path(source).name if source != BUNDLED else 'the bundled model'}…")
                work.models[key] = load_teacher(source, state=state)
            state.check_cancelled()
        out.append(work.models[key])
    return out


def _texts(candidates: list) -> tuple[list[tuple[str, str]], str]:
    """The first corpus of `candidates` that has documents: ('corpus', name-or-path, why) read
    with core.documents.load_corpus, or ('documents', [(id, text)], description)."""
    from core.documents import load_corpus

    problems = []
    for kind, value, why in candidates:
        if kind == "documents":
            docs = [(i, t) for i, t in value if t and t.strip()]
            if docs:
                return docs[:DASHBOARD_DOCUMENTS], why
            continue
        try:
            corpus = load_corpus([value])
        except Exception as exc:  # a moved or unreadable training corpus: try the next one
            problems.append(f"{value}: {getattr(exc, 'what', exc)}")
            continue
        docs = [(d.id, d.text) for d in corpus.documents if d.text.strip()]
        if docs:
            return docs[:DASHBOARD_DOCUMENTS], why
        problems.append(f"{value}: no readable documents")
    from core.errors import DistillscopeError

    raise DistillscopeError("No documents to read the latents on" + (f" ({'; '.join(problems)})" if problems else "") + ".",
                            "Open a corpus in the Inspect tab.")


def _corpus(work: _Work, cc, models: list, candidates: list, state):
    """The dashboard corpus, encoded once per (crosscoder, models, candidates)."""
    from core.crosscoder.dashboard import encode_corpus

    key = (id(cc), tuple(id(m) for m in models),
           tuple((kind, value if isinstance(value, str) else (len(value), tuple(i for i, _ in value[:50])), why)
                 for kind, value, why in candidates))
    if work.corpus is None or work.corpus_key != key:
        work.corpus = None
        docs, why = _texts(candidates)
        corpus = encode_corpus(cc, models, [t for _, t in docs], doc_ids=[i for i, _ in docs], max_length=MAX_LENGTH,
                               state=state)
        work.corpus, work.corpus_key, work.texts = corpus, key, docs
        work.corpus_note = f"{len(docs):,} documents of {why}"
    return work.corpus


class CrosscoderSession(QObject):
    opened = Signal()  # a crosscoder is on screen
    open_failed = Signal(str)
    dashboard_shown = Signal(int)  # latent
    analysis_done = Signal(str)  # one of ANALYSES, shown
    task_ended = Signal(str, str)  # task key, outcome ('finished', 'failed', 'cancelled')
    steer_requested = Signal(int, int)  # latent, model index whose decoder row

    def __init__(self, window=None, parent=None):
        super().__init__(parent if parent is not None else window)
        self.window = window
        self.view = CrosscoderView()
        self._runner: Optional[TaskRunner] = None
        self._work = _Work()
        self._gen = 0
        self.crosscoder = None
        self.folder: Optional[str] = None
        self.info: Optional[dict] = None  # what _open_task returned, less the crosscoder
        self.sources: list[str] = []
        self.documents: Optional[tuple[list[tuple[str, str]], str]] = None  # set_documents()
        self.frequency = None  # per latent, the report's or the dashboard corpus'
        self.frequency_source = ""
        self.scaling: dict[str, list[dict]] = {}
        self.tags: dict[int, str] = {}
        self.results: dict[str, object] = {}
        self.dashboard = None  # the LatentDashboard shown
        self.error = ""
        v = self.view
        v.open_requested.connect(self.open_dialog)
        v.models_requested.connect(self.choose_models)
        v.analysis_requested.connect(self.run_analysis)
        v.cancel_requested.connect(self.cancel)
        v.dashboard_requested.connect(self.open_dashboard)
        v.steer_requested.connect(self._steer)
        v.export_requested.connect(lambda key: self.export(key))
        self.steer_requested.connect(self._send_to_steering)

    # ================================================================== worker

    @property
    def runner(self) -> TaskRunner:
        if self._runner is None:
            self._runner = TaskRunner(self)
            r = self._runner
            r.started.connect(lambda task: self.view.set_busy(task.title, True))
            r.progress.connect(lambda _task, done, total, message: self.view.show_progress(done, total, message))
            r.busy_changed.connect(lambda busy: None if busy else self.view.set_busy("", False))
            r.finished.connect(lambda task, _result: self.task_ended.emit(task.key, "finished"))
            r.failed.connect(lambda task, _what, _hint: self.task_ended.emit(task.key, "failed"))
            r.cancelled.connect(self._cancelled)
        return self._runner

    def _cancelled(self, task: Task) -> None:
        if getattr(task, "gen", None) == self._gen and task.key != "open":
            self.view.show_status(f"{task.title}: cancelled. What was shown before stays.")
            if task.key == "dashboard" and self.view.dashboard.data is None:
                self.view.dashboard.show_error(self.view.dashboard.latent, "Cancelled.")
        self.task_ended.emit(task.key, "cancelled")

    def busy(self) -> bool:
        return self._runner is not None and self._runner.is_busy()

    def cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()

    def cancel_if_shown(self) -> None:
        if self.window is not None and self.window.tabs.currentWidget() is self.view:
            self.cancel()

    def shutdown(self) -> None:
        if self._runner is not None:
            if not self._runner.shutdown(timeout_ms=5_000):
                self._runner._thread.wait()

    def threads_finished(self) -> bool:
        return self._runner is None or self._runner.is_finished()

    def _set_status(self, text: str) -> None:
        """For gui.dialogs.export_view: the tab's status line, and the window's."""
        self.view.show_status(text)
        if self.window is not None:
            self.window._set_status(text)

    def _submit(self, key: str, title: str, fn, on_result, on_error=None) -> Task:
        gen = self._gen

        def done(result):
            if gen == self._gen:
                on_result(result)

        def failed(what: str, hint: str):
            if gen != self._gen:
                return
            message = f"{what} {hint}".strip()
            self.error = message
            if on_error is not None:
                on_error(message)
            else:
                self.view.show_status(message, error=True)

        task = Task(key, fn, title=title, on_result=done, on_error=failed)
        task.gen = gen
        return self.runner.submit(task)

    # ================================================================== open

    def open_dialog(self) -> None:
        from core import paths

        start = self.folder or str(paths.data_dir() / "runs")
        folder = QFileDialog.getExistingDirectory(self.view, "Open a crosscoder folder (cfg.json + "
                                                  "crosscoder_weights.safetensors)", start)
        if folder:
            self.open(folder)

    def open(self, folder) -> Task:
        """Load a crosscoder folder in the background; `opened` or `open_failed` follows."""
        folder = str(folder)
        if self._runner is not None:
            self._runner.cancel()  # everything running belongs to the crosscoder shown so far
        self._gen += 1
        self.error = ""
        name = _display_name(folder)
        self.view.show_status(f"Opening {name}…")
        if self.crosscoder is None:
            self.view.show_message(f"Opening the crosscoder {name}…")

        def failed(message: str) -> None:
            text = f"The crosscoder in {folder} cannot be opened: {message}"
            if self.crosscoder is None:
                self.view.show_message(text)
            self.view.show_status(text, error=True)
            self.open_failed.emit(text)

        return self._submit("open", f"Opening {name}", lambda _state: _open_task(folder), self._opened, failed)

    def _opened(self, result: dict) -> None:
        cc = result.pop("crosscoder")
        self.crosscoder, self.info, self.folder = cc, result, result["folder"]
        self.sources = list(cc.cfg.model_sources)
        work = _Work()  # a new corpus; models stay loaded when this crosscoder reads them too
        keep = {source_key(s) for s in self.sources}
        work.models = {k: m for k, m in self._work.models.items() if k in keep}
        self._work = work
        self.frequency = result["frequency"]
        self.frequency_source = "held-out tokens of its training run (report.json)" if self.frequency else ""
        self.scaling, self.tags, self.results, self.dashboard = {}, {}, {}, None
        self.view.set_model_names(cc.cfg.model_names)
        self.view.show_crosscoder(self._summary(), result["report"], self._lists())
        self.view.dashboard.clear("Double-click a latent in the lists (or select it and press Enter) to see its "
                                  "dashboard.")
        for panel in (self.view.ablation, self.view.reasoning, self.view.geometry_panel):
            panel.data = None
            panel.stack.setCurrentIndex(0)
        c = result["report"]["counts"]
        status = (f"Opened {_display_name(self.folder)}: {c['variant-only']:,} variant-only, {c['base-only']:,} "
                  f"base-only and {c['shared']:,} shared latents.")
        problem = self.model_problem()
        if problem:
            status += f" {problem}"
        if result.get("note"):
            status += " " + result["note"]
        self.view.show_status(status, error=bool(problem))
        self.opened.emit()

    def _summary(self) -> str:
        cc, info = self.crosscoder, self.info
        cfg = cc.cfg
        names = cfg.model_names
        models = " · ".join(f"<b>{n}</b>: {_source_text(s)}" for n, s in zip(names, self.sources))
        ev = (info.get("saved") or {}).get("evaluation") or {}
        fit = ""
        if ev:
            fit = " · held-out FVE " + ", ".join(f"{n} {ev.get(f'fve_{n}', float('nan')):.3f}" for n in names)
        return (f"<b>{_display_name(self.folder)}</b>: {cfg.architecture}, {cfg.d_latent:,} latents on "
                f"{cfg.hook or '(no hook)'}{fit}<br>{models}")

    # ================================================================== lists

    def _lists(self) -> dict[str, list[dict]]:
        rep = self.info["report"]
        out = {"variant-only": [], "base-only": [], "shared": []}
        freq = self.frequency
        scaling = {r["latent"]: r for rows in self.scaling.values() for r in rows}
        for j, c in enumerate(rep["class"]):
            if c not in out:
                continue
            row = {"latent": j, "rel": rep["relative_norm"][j], "cos": rep["cosine"][j],
                   "freq": None if freq is None else float(freq[j]), "tag": self.tags.get(j, "")}
            s = scaling.get(j)
            if s is not None:
                row.update(nu_e=s["nu_error"], nu_r=s["nu_reconstruction"], flagged=s["flagged"],
                           scaling=s["verdict"], scaling_tip=s["tip"])
            out[c].append(row)
        return out

    def _refresh_lists(self) -> None:
        note = f"Frequency: on {self.frequency_source}." if self.frequency_source else \
            "Frequency: shown once a dashboard has read the documents."
        if self.scaling:
            note += " ν: Latent Scaling (flagged in orange: the other model holds the direction after all)."
        self.view.set_lists(self._lists(), note)

    # ================================================================== models

    def model_problem(self) -> str:
        """Why the models cannot be loaded ('' when they can, as far as the paths show)."""
        if self.crosscoder is None:
            return ""
        names = self.crosscoder.cfg.model_names
        for name, source in zip(names, self.sources):
            if not source:
                return (f"The crosscoder does not record where its {name} model came from: choose it with "
                        "Models… before opening a dashboard.")
            if source != BUNDLED and not Path(source).expanduser().exists():
                return (f"The {name} model it was trained on ({source}) is not there any more: choose its folder "
                        "with Models… to open dashboards and run analyses.")
        return ""

    def set_sources(self, sources: list[str]) -> None:
        """Replace the model sources (base, variant) the crosscoder recorded."""
        self.sources = [str(s) for s in sources]
        self._work.corpus = None
        self.view.summary.setText(self._summary())
        problem = self.model_problem()
        self.view.show_status(problem or "Models set; they load when a dashboard or an analysis needs them.",
                              error=bool(problem))

    def choose_models(self) -> None:
        if self.crosscoder is None:
            return
        sources = list(self.sources)
        for i, name in enumerate(self.crosscoder.cfg.model_names):
            folder = QFileDialog.getExistingDirectory(self.view, f"The {name} model (a Hugging Face folder); "
                                                      "cancel keeps the recorded one", sources[i] or "")
            if folder:
                sources[i] = folder
        self.set_sources(sources)

    def _lent(self) -> dict:
        """Twins of the window's teacher for sources it already is (no second load)."""
        w = self.window
        teacher = getattr(w, "teacher", None) if w is not None else None
        out = {}
        if teacher is None:
            return out
        for source in self.sources:
            key = source_key(source)
            if key and key not in self._work.models and key not in out:
                try:
                    same = teacher.loaded_as(source)
                except Exception:
                    same = False
                if same:
                    out[key] = _own_twin(teacher)
        return out

    def _candidates(self) -> list:
        """Where the dashboard documents come from, in order of preference."""
        if self.documents is not None:
            docs, name = self.documents
            return [("documents", list(docs), name)]
        out = []
        corpus = ((self.info or {}).get("saved") or {}).get("corpus")
        if corpus:
            out.append(("corpus", str(corpus), f"{_source_text(str(corpus))} (the crosscoder's training corpus)"))
        w = self.window
        if w is not None and getattr(w, "corpus", None) is not None and len(w.corpus.documents):
            out.append(("documents", [(d.id, d.text) for d in w.corpus.documents[:DASHBOARD_DOCUMENTS]],
                        f"{w.corpus.name} (the open corpus)"))
        out.append(("corpus", "demo", "the demo corpus"))
        return out

    def set_documents(self, documents: list[tuple[str, str]], name: str) -> None:
        """The documents dashboards and analyses read, instead of the training corpus."""
        self.documents = ([(str(i), str(t)) for i, t in documents], name)

    # ================================================================== dashboard

    def open_dashboard(self, latent: int) -> Optional[Task]:
        cc = self.crosscoder
        if cc is None:
            return None
        latent = int(latent)
        self.view.select_latent(latent)
        self.view.right.setCurrentWidget(self.view.dashboard)
        rep = self.info["report"]
        title = dashboard_title(latent, cc.d_latent, rep["class"][latent], rep["relative_norm"][latent],
                                rep["cosine"][latent])
        problem = self.model_problem()
        if problem:
            self.view.dashboard.begin(latent, title, problem)
            self.view.dashboard.show_error(latent, problem)
            self.view.show_status(problem, error=True)
            return None
        first = self._work.corpus is None
        self.view.dashboard.begin(latent, title, "Reading the documents through both models (once)…" if first
                                  else "Computing…")
        sources, lent, candidates = list(self.sources), self._lent(), self._candidates()
        frequency = self.info["frequency"]  # the report's: the class the lists show
        work = self._work

        def run(state):
            from core.crosscoder.dashboard import latent_dashboard

            models = _models(work, sources, lent, state)
            corpus = _corpus(work, cc, models, candidates, state)
            dash = latent_dashboard(cc, latent, models, corpus, frequency=frequency, state=state)
            return dash, corpus.frequency().tolist(), work.corpus_note

        def done(result) -> None:
            dash, corpus_frequency, note = result
            self.dashboard = dash
            if self.frequency is None:
                self.frequency, self.frequency_source = corpus_frequency, note
                self._refresh_lists()
            self.view.dashboard.show_dashboard(dash, title, self._stats(dash, note))
            self.view.show_status(f"Latent {latent}: read {note}.")
            self.dashboard_shown.emit(latent)

        return self._submit("dashboard", f"Latent {latent}'s dashboard", run, done,
                            lambda message: (self.view.dashboard.show_error(latent, message),
                                             self.view.show_status(message, error=True)))

    def _stats(self, d, note: str) -> str:
        names = d.model_names
        norms = ", ".join(f"{n} {v:.3g}" for n, v in zip(names, d.decoder_norms))
        fires = (f"Fires on {100 * d.frequency:.3g}% of {d.n_tokens:,} tokens ({d.count:,}) of {note}"
                 if d.count else f"Never fires on the {d.n_tokens:,} tokens of {note}")
        parts = [fires]
        if d.count:
            parts.append(f"max {d.max:.3g}, mean when active {d.mean_active:.3g}, mean {d.mean_activation:.3g}")
        parts.append(f"decoder norms {norms} (normalized space)")
        return " · ".join(parts)

    # ================================================================== analyses

    def run_analysis(self, kind: str) -> Optional[Task]:
        cc = self.crosscoder
        if cc is None:
            return None
        problem = self.model_problem()
        if problem:
            self.view.show_status(problem, error=True)
            return None
        sources, lent, candidates, work = list(self.sources), self._lent(), self._candidates(), self._work
        rep = self.info["report"]
        names = cc.cfg.model_names
        sets = {c: [j for j, k in enumerate(rep["class"]) if k == c] for c in ("variant-only", "base-only")}
        title = ANALYSIS_TITLES.get(kind, kind)
        if kind == "scaling":
            if not sets["variant-only"] and not sets["base-only"]:
                self.view.show_status("Latent Scaling tests exclusive latents, and this crosscoder has none.")
                return None

            def run(state):
                from core.crosscoder import latent_scaling
                from core.crosscoder.dashboard import paired_token_batches

                models = _models(work, sources, lent, state)
                docs, why = _texts(candidates)
                batches = list(paired_token_batches(cc, models, [t for _, t in docs], max_length=MAX_LENGTH,
                                                    state=state))
                state.report(0, 0, "Latent Scaling")
                out = {}
                for c, owner in (("variant-only", 1), ("base-only", 0)):
                    if sets[c]:
                        out[c] = _verdicts(latent_scaling(cc, batches, sets[c], owner=owner).rows())
                n = sum(int(b.shape[0]) for b in batches)
                return out, f"{n:,} tokens of {len(docs):,} documents of {why}"

            def done(result):
                out, where = result
                self.scaling = out
                self.results["scaling"] = out
                self._refresh_lists()
                parts = [f"{c}: {sum(r['flagged'] for r in rows)} of {len(rows)} flagged" for c, rows in out.items()]
                self.view.show_status(f"Latent Scaling on {where}: {'; '.join(parts)} (ν ε > {FLAG_NU_ERROR:g} "
                                      f"or ν r > {FLAG_NU_RECONSTRUCTION:g}: the other model holds the latent's "
                                      "direction, so it only looks exclusive).")
                self.analysis_done.emit(kind)

        elif kind == "ablation":
            name = "variant-only"
            latents = sets[name]
            if not latents:
                name = "rel>0.5"
                latents = [j for j, r in enumerate(rep["relative_norm"])  # the seed's cut, live latents only
                           if r is not None and r > 0.5 and rep["class"][j] != "dead"]
            if not latents:
                self.view.show_status("No latent leans to the variant (relative norm > 0.5): nothing to ablate.")
                return None

            def run(state):
                import numpy as np

                from core.crosscoder import ablate

                models = _models(work, sources, lent, state)
                docs, why = _texts(candidates)
                docs = docs[:ABLATION_DOCUMENTS]
                result = ablate(cc, models, [t for _, t in docs], {name: latents}, baselines=("random-matched",),
                                max_length=MAX_LENGTH, batch_size=4, state=state)
                data = result.to_json()
                values = {"document": {}, "token": {}}
                for met in ("mean_abs_logit_change", "kl", "loss_change"):
                    values["document"][met] = {s: {m: result.values(s, m, met, "document").tolist()
                                                   for m in result.ablated_models} for s in result.sets}
                    values["token"][met] = {s: {m: np.asarray(result.per_token[s][m][met]).tolist()
                                                for m in result.ablated_models} for s in result.sets}
                data.update(values=values, set=name, random=f"{name} random-matched",
                            note=f"{len(latents):,} {name} latents ablated from each model's residual at "
                                 f"{result.hook} (every token but BOS) on {len(docs):,} documents of {why} "
                                 f"({result.n_tokens:,} scored tokens). Dashed: as many random latents with "
                                 "matching firing frequencies. A variant-only set should move the variant, "
                                 "not the base.")
                return data

            def done(data):
                self.results["ablation"] = data
                self.view.ablation.show_result(data)
                self.view.right.setCurrentWidget(self.view.ablation)
                self.view.show_status("Ablation done: " + "; ".join(
                    f"{r['set']} in {r['model']}: mean |Δlogit| {r['mean_abs_logit_change_mean']:.3g}, KL "
                    f"{r['kl_mean']:.3g}" for r in data["summary"] if r["set"] in (data["set"], data["random"])))
                self.analysis_done.emit(kind)

        elif kind == "reasoning":
            def run(state):
                from core.crosscoder.reasoning import load_prompt_sets, tag_latents

                models = _models(work, sources, lent, state)
                return tag_latents(cc, models, load_prompt_sets(), max_length=MAX_LENGTH, state=state).to_json()

            def done(data):
                self.results["reasoning"] = data
                self.tags = {r["latent"]: r["tag"] for r in data["rows"] if r.get("tag")}
                self._refresh_lists()
                self.view.reasoning.show_result(data)
                self.view.right.setCurrentWidget(self.view.reasoning)
                self.view.show_status(f"Reasoning tags: {len(self.tags):,} latents tagged (Tag column in the lists).")
                self.analysis_done.emit(kind)

        elif kind == "geometry":
            def run(state):
                from core.crosscoder.geometry import geometry

                models = _models(work, sources, lent, state)
                return geometry(dict(zip(names, models)), hook=cc.cfg.hook or None, state=state).to_json()

            def done(data):
                self.results["geometry"] = data
                self.view.geometry_panel.show_result(data)
                self.view.right.setCurrentWidget(self.view.geometry_panel)
                self.view.show_status(f"Geometry: {len(data['quadruples']):,} quadruples in "
                                      f"{len(data['classes'])} classes.")
                self.analysis_done.emit(kind)
        else:
            raise ValueError(f"Unknown analysis {kind!r}.")
        return self._submit(kind, title, run, done)

    # ================================================================== steering and export

    def selected_latent(self) -> Optional[int]:
        j = self.view.selected_latent()
        if j is None and self.dashboard is not None:
            j = self.dashboard.latent
        return j

    def selected_direction(self, model: Optional[int] = None):
        """The selected latent's decoder row for `model` (default: the model it belongs to) in that
        model's own units, as a core.steering.Direction at the crosscoder's hook; None when no
        latent is selected."""
        cc, j = self.crosscoder, self.selected_latent()
        if cc is None or j is None:
            return None
        from core.steering import crosscoder_direction

        m = self.view.owner(j) if model is None else int(model)
        return crosscoder_direction(cc, j, m, crosscoder_name=_display_name(self.folder))

    def steer_source(self, latent: int, model: int) -> dict:
        """What core.steering.direction_from_source reads for this latent's decoder row for
        `model`, or for OWN_ROWS each model's own row in proportion."""
        from gui.crosscoder_view import OWN_ROWS

        decoder = "own" if model == OWN_ROWS else int(model)  # core.steering.OWN_DECODER (no torch import here)
        return {"kind": "crosscoder", "folder": self.folder, "latent": int(latent), "decoder": decoder}

    def _steer(self, latent: int, model: int) -> None:
        if self.crosscoder is None or latent < 0:
            return
        self.view.select_latent(latent)
        self.steer_requested.emit(int(latent), int(model))

    def _send_to_steering(self, latent: int, model: int) -> None:
        """Hand the latent to the window's Steering tab (when there is one)."""
        steering = getattr(self.window, "steering", None) if self.window is not None else None
        if steering is None or not hasattr(steering, "add_direction"):
            return
        if model != 0 and getattr(steering, "slots", {}).get("variant") is None and hasattr(steering, "load_variant"):
            source = self.sources[1] if len(self.sources) > 1 else ""
            if source and source != BUNDLED and Path(source).is_dir():
                steering.load_variant(source)
        steering.add_direction(self.steer_source(latent, model))
        self.window.tabs.setCurrentWidget(steering.view)
        rows = "own decoder rows (each model its own)" if model < 0 else \
            f"{self.crosscoder.cfg.model_names[model]} decoder row"
        self._set_status(f"Latent {latent}'s {rows} added to the Steering tab.")

    def export(self, key: str, path: str = "") -> str:
        """A panel as CSV or PNG (by suffix; asks for the file when `path` is empty)."""
        from gui.dialogs import export_view

        panel = self.view.panels()[key]
        try:
            return export_view(self, panel, f"Export the {key.replace('-', ' ')}", f"crosscoder-{key}.csv", path)
        except (ValueError, OSError) as exc:
            self.view.show_status(f"Nothing written: {exc}", error=True)
            return ""


def _verdicts(rows: list[dict]) -> list[dict]:
    """Latent Scaling rows with a short verdict and its explanation."""
    for r in rows:
        nu_e, nu_r = r["nu_error"], r["nu_reconstruction"]
        if r["n_active"] == 0 or nu_e is None or nu_r is None:
            r["verdict"], r["tip"] = "no evidence", "It never fired on these tokens, so its betas are undefined."
        elif nu_e > FLAG_NU_ERROR:
            r["verdict"], r["tip"] = "shrinkage?", (f"ν ε = {nu_e:.2f}: the other model's reconstruction error holds "
                                                    "this direction (Complete Shrinkage): likely not exclusive.")
        elif nu_r > FLAG_NU_RECONSTRUCTION:
            r["verdict"], r["tip"] = "decoupling?", (f"ν r = {nu_r:.2f}: the other model's reconstruction holds "
                                                     "this direction through other latents (Latent Decoupling).")
        else:
            r["verdict"], r["tip"] = "exclusive", (f"ν ε = {nu_e:.2f}, ν r = {nu_r:.2f}: the other model shows "
                                                   "little of this direction.")
    return rows


def _display_name(folder: Optional[str]) -> str:
    """A run's name for its artifacts/crosscoder folder, else the folder's name."""
    if not folder:
        return ""
    p = Path(folder)
    if p.name == "crosscoder" and p.parent.name == "artifacts":
        return p.parent.parent.name
    return p.name


def _source_text(source: str) -> str:
    import html

    if source == BUNDLED:
        return "bundled (Gemma 3 270M)"
    if not source:
        return "(not recorded)"
    p = Path(source)
    if p.name == "variant" and p.parent.name == "artifacts":
        return html.escape(f"{p.parent.parent.name} (variant run)")
    return html.escape(p.name or source)


def _own_twin(teacher):
    """A twin of the window's teacher for this tab's thread (the Steering tab's helper: its own
    modules over the same weights, without hooks another thread's core call had attached)."""
    from gui.steering_session import own_twin

    return own_twin(teacher)
