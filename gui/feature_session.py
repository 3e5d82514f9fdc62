"""The dictionary side of the Inspect tab: which dictionary is loaded, the selected document's
feature scores, the selected feature (bars, token colours, dashboard), comparison, labels, search.

Where the work runs (the window's three worker threads, gui/worker.py):
  io        loading a dictionary (torch is imported there, never on the GUI thread);
  inspector one document's features, on the teacher's shadow twin (gui/shadow.py). When the
            dictionary reads the residual at the layer the token view shows, the token view's own
            task scores the document from the same forward pass (one teacher run per document);
            also a dashboard's data (contexts, logit effects, nearest features), token search and
            a class's token scores: all lookups in the feature index, never a teacher run per click;
  runner    the feature index: the open corpus' tokens at the dictionary's hook, cached on disk,
            each encoded once (core.features.index_for), with progress and Cancel in the status
            bar; and the corpus' document vectors at the dictionary's layer when the token view
            shows another layer (the projection's reference).
Results come back to the GUI thread as plain objects; a result for a dictionary, teacher or corpus
that has since changed is dropped (the generation counters `Dictionary.gen` and `window._gen`).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog

from gui.dashboard import ContextRow, DashboardData, FeatureDashboard
from gui.feature_bars import FeatureBarsPanel
from gui.feature_search import FeatureSearch, SearchHit
from gui.worker import Task

DOC_MAX_LENGTH = 2048  # tokens of one inspected document, as the token view (core.inspect.token_norms)
# The corpus token cache and its feature index: the same settings as `distillscope label DICT
# --corpus ...`, so the two share the cache folder and the index on disk (whichever runs first).
INDEX_MAX_LENGTH = 256  # tokens per document, as the corpus vectors and the CLI
INDEX_DTYPE = "float32"
DOC_CACHE = 64  # documents whose features are kept in memory (token activations are sparse)
DASHBOARD_CACHE = 64
N_CONTEXTS = 20
N_EFFECTS = 10
N_NEAREST = 10
N_TOKEN_HITS = 20
STARTER = "starter"
SETTINGS_KEY = "v1/dictionary"


# ==================================================================================== plain data


@dataclass
class Dictionary:
    """A loaded dictionary and what lives beside it (labels, reference)."""

    source: str  # the path it was opened from
    folder: Path  # where labels.json and reference.safetensors are read and written
    name: str
    sae: Any  # core.dictionaries.SAE, eval mode, on the CPU
    labels: Any  # core.features.Labels
    labels_error: str = ""  # labels.json could not be read: edits are not saved over it
    file_reference: Any = None  # core.features.Reference shipped in the folder, or None
    gen: int = 0
    hook: Any = None  # core.models.HookPoint, once it is known to fit the teacher
    fit_error: Optional[tuple[str, str]] = None  # (what, hint) when it does not fit the teacher
    starter: bool = False

    def describe(self) -> str:
        cfg = self.sae.cfg
        arch = {"topk": f"TopK k={cfg.k}", "batchtopk": f"BatchTopK k={cfg.k}", "standard": "ReLU",
                "jumprelu": "JumpReLU"}.get(cfg.architecture, cfg.architecture)
        where = cfg.hook_name or "no hook"
        return f"Dictionary {self.name} · {arch} · {self.sae.d_sae:,} features · reads {where}"


@dataclass
class ScoreJob:
    """What the token view's task needs to score its document too (captured on the GUI thread)."""

    sae: Any
    gen: int


@dataclass
class DocFeatures:
    """One document's features: token scores (mean, max), the pooled vector for projection and
    every token's activations (sparse [T, d_sae]: TopK keeps k per token)."""

    tokens: list[str]
    is_bos: list[bool]
    pooled: Any  # [d_in] mean over non-BOS tokens
    mean: Any  # [d_sae]
    peak: Any  # [d_sae]
    token_acts: Any  # sparse [T, d_sae], BOS rows 0

    def column(self, feature: int) -> list[float]:
        import torch

        col = self.token_acts.index_select(1, torch.tensor([int(feature)]))
        return col.to_dense().flatten().tolist()


@dataclass
class IndexResult:
    index: Any  # core.features.FeatureIndex (attached to the SAE and the cache)
    cache: Any  # core.activations.ActivationCache of the corpus' tokens at the hook
    auto: Any  # core.features.Labels: automatic labels from this corpus
    corpus_name: str = ""


# ==================================================================================== worker bodies
# These run on worker threads and import core (and torch) there.


def load_dictionary_task(path: str, hook: Optional[str], starter: bool) -> Dictionary:
    from core.dictionaries import load
    from core.errors import DistillscopeError
    from core.features import load_labels, load_reference

    sae = load(path, hook=hook)
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    labels_error = ""
    try:
        labels = load_labels(folder)
    except DistillscopeError as exc:
        from core.features import Labels

        labels, labels_error = Labels(), f"{exc.what} {exc.hint}".strip()
    try:
        reference = load_reference(folder)
    except DistillscopeError:
        reference = None
    name = folder.name if p.is_dir() or p.name in ("cfg.json", "sae_weights.safetensors") else f"{folder.name}/{p.name}"
    return Dictionary(str(path), folder, name, sae, labels, labels_error, reference, starter=starter)


def doc_features_of(doc, sae) -> DocFeatures:
    """Score a document's token activations (core.activations.DocumentActivations)."""
    from core.features import token_scores

    scores = token_scores(sae, doc.acts, doc.is_bos)
    return DocFeatures(list(doc.tokens), list(doc.is_bos), doc.pooled(), scores.values, scores.peak,
                       scores.token_acts.to_sparse())


def score_document(teacher, text: str, sae, hook, state) -> DocFeatures:
    from core.activations import document_activations

    doc = document_activations(teacher, text, hook, DOC_MAX_LENGTH, state)
    state.check_cancelled()
    return doc_features_of(doc, sae)


def inspect_document(teacher, text: str, layer: int, job: Optional[ScoreJob], state):
    """The token view's task: (TokenView of residual norms at `layer`, (gen, DocFeatures) or None).
    With a job (a dictionary reading resid_post.layer), one forward pass serves both."""
    from core.inspect import TokenView, token_norms

    if job is None:
        return token_norms(teacher, text, layer, DOC_MAX_LENGTH, state=state), None
    from core.activations import document_activations
    from core.models import HookPoint

    doc = document_activations(teacher, text, HookPoint("resid_post", layer), DOC_MAX_LENGTH, state)
    view = TokenView(doc.tokens, doc.acts.norm(dim=-1).tolist(), doc.is_bos, doc.pooled())
    state.check_cancelled()
    return view, (job.gen, doc_features_of(doc, job.sae))


def build_index(teacher, documents, sae, hook, corpus_name: str, state) -> IndexResult:
    """The open corpus' tokens at the dictionary's hook (extracted once, cached on disk), each
    encoded once into the feature index (also cached on disk), and automatic labels from it."""
    from core.activations import ExtractSettings, extract
    from core.features import Labels, index_for, label_all
    from core.inspect import auto_cache_folder

    settings = ExtractSettings(hook=hook.name, mode="tokens", max_length=INDEX_MAX_LENGTH, dtype=INDEX_DTYPE)
    cache = extract(teacher, documents, auto_cache_folder(teacher, documents, settings), settings, state)
    state.check_cancelled()
    index = index_for(sae, cache, state)
    state.report(0, 0, "Labelling features")
    auto = label_all(index, sae, teacher.token_strings, Labels())
    return IndexResult(index, cache, auto, corpus_name)


def dashboard_data(feature: int, sae, index, teacher, corpus_rows: dict, corpus_note: str, state) -> DashboardData:
    from core.errors import DistillscopeError
    from core.features import logit_effects, nearest_features

    data = DashboardData(feature, int(sae.d_sae), corpus_note=corpus_note)
    if index is not None:
        data.count = int(index.count[feature])
        data.n_tokens = index.n_tokens
        data.frequency = data.count / max(index.n_tokens, 1)
        data.max = float(index.max[feature])
        data.mean_active = float(index.mean_active[feature])
        edges, counts = index.histogram(feature)
        data.hist_edges, data.hist_counts = edges.tolist(), counts.tolist()
        contexts = index.contexts(feature, width=12, n=N_CONTEXTS)
        state.check_cancelled()
        ids = sorted({t for c in contexts for t in c.token_ids})
        strings = dict(zip(ids, teacher.token_strings(ids))) if teacher is not None and ids else {}
        data.contexts = [ContextRow(c.doc_id, corpus_rows.get(c.doc_id), c.position, c.value,
                                    [strings.get(t, f"<{t}>") for t in c.token_ids], list(c.acts), c.center)
                         for c in contexts]
    if teacher is None:
        data.effects_note = "Load the teacher model to see logit effects."
    else:
        try:
            data.promoted, data.suppressed = logit_effects(teacher, sae, feature, N_EFFECTS)
        except DistillscopeError as exc:
            data.effects_note = f"{exc.what} {exc.hint}".strip()
    data.nearest = nearest_features(sae, feature, N_NEAREST)
    return data


def class_token_scores(cache, sae, doc_rows: list[int], state):
    """(mean, peak) [d_sae] of a class for the token scorings: the mean over the class's documents
    of each document's mean and max activation, from the corpus token cache (BOS left out there)."""
    import torch
    from core.features import encode_tokens

    wanted = torch.tensor(sorted(doc_rows), dtype=torch.long)
    total_mean = torch.zeros(sae.d_sae, dtype=torch.float64)
    total_peak = torch.zeros(sae.d_sae, dtype=torch.float64)
    n_docs = 0
    for data in cache.shards():
        state.check_cancelled()
        doc = data["doc_index"].long()
        mask = torch.isin(doc, wanted)
        if not mask.any():
            continue
        acts = encode_tokens(sae, data["acts"][mask].float())
        doc = doc[mask]
        for d in doc.unique():
            rows = acts[doc == d]
            total_mean += rows.mean(0).double()
            total_peak += rows.amax(0).double()
            n_docs += 1
    if n_docs == 0:
        return None
    return (total_mean / n_docs).float(), (total_peak / n_docs).float()


def search_tokens(index, teacher, variants: list[str]) -> list[tuple[str, str, int, list]]:
    """For each variant text: (variant, its first token's string, occurrences in the corpus,
    TokenHits)."""
    from core.errors import DistillscopeError
    from core.features.labels import first_token

    out = []
    for text in variants:
        try:
            token = first_token(teacher, text)
        except DistillscopeError:
            continue
        out.append((text, teacher.token_strings([token])[0], index.token_occurrences(token),
                    index.features_for_token(token, N_TOKEN_HITS)))
    return out


def token_variants(text: str) -> list[str]:
    """What a token query means: a quoted query exactly ("' because'" keeps its space); a bare
    word both as it appears mid-text (with a leading space) and as written."""
    stripped = text.strip("\n")
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return [stripped[1:-1]] if stripped[1:-1] else []
    word = stripped.strip()
    if not word:
        return []
    return [" " + word, word] if not stripped.startswith(" ") else [stripped]


def agreement_note(teacher_values, student_values, k: int = 20) -> str:
    """The seed's per-document agreement of teacher and student feature scores (core.agreement)."""
    import torch

    from core.agreement import feature_correlation, top_k_overlap

    t = torch.as_tensor(teacher_values, dtype=torch.float64)[None]
    s = torch.as_tensor(student_values, dtype=torch.float64)[None]
    r, _ = feature_correlation(t, s)
    overlap, _ = top_k_overlap(t, s, min(k, t.shape[1]))
    return f"Agreement with the teacher: r = {r:.2f} over all {t.shape[1]:,} features, top-{k} overlap {overlap:.2f}"


def _quoted(token: str) -> str:
    return "'" + token.replace("\n", "\\n").replace("\t", "\\t") + "'"


# ==================================================================================== the session


class FeatureSession(QObject):
    """Owns the bars panel, the dashboard dock and the search dialog; the window owns the rest."""

    dictionary_changed = Signal()
    scores_shown = Signal()  # the bars show a document's scores
    dashboard_shown = Signal(int)  # the dashboard shows this feature's data
    index_ready = Signal()
    search_shown = Signal()

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.bars = FeatureBarsPanel()
        self.dictionary: Optional[Dictionary] = None
        self.feature = -1
        self._gen = 0
        self._loading: Optional[Task] = None
        self._docs: collections.OrderedDict = collections.OrderedDict()  # (id, text) -> DocFeatures
        self._pending: set = set()  # doc keys with a features task in flight
        self._projections: dict = {}  # (doc key or class label, reference key) -> values
        self._class_tokens: dict = {}  # (class label, index id) -> (mean, peak) or None
        self._class_pending: set = set()
        self._student_vectors: dict = {}  # doc key -> the student's raw document vector [d_in]
        self._student_pending: set = set()
        self._index: Optional[IndexResult] = None
        self._index_key = None
        self._index_task: Optional[Task] = None
        self._index_declined = None  # a build the user cancelled is not restarted by itself
        self._index_error = ""
        self._vectors_task: Optional[Task] = None
        self._dashboards: collections.OrderedDict = collections.OrderedDict()
        self._dashboard_task: Optional[Task] = None
        self.dock: Optional[QDockWidget] = None
        self.dashboard: Optional[FeatureDashboard] = None
        self.search: Optional[FeatureSearch] = None
        self._hook_dialog: Optional[QInputDialog] = None
        self.last_export: Optional[str] = None

        self._computing = QTimer(self, singleShot=True, interval=150)
        self._computing.timeout.connect(self._show_computing)
        self.bars.feature_selected.connect(self.select_feature)
        self.bars.feature_activated.connect(self.open_dashboard)
        self.bars.method_changed.connect(lambda _m: self.refresh())
        self.bars.compare_changed.connect(lambda _k, _v: self.refresh())
        self.bars.export_requested.connect(self.export_bars_dialog)
        window.teacher_changed.connect(self._teacher_changed)
        window.corpus_changed.connect(self._corpus_changed)
        window.vectors_ready.connect(self._vectors_ready)
        window.student_changed.connect(self._student_changed)
        for runner in (window.runner, window.inspector, window.io):
            runner.cancelled.connect(self._task_cancelled)
        self._update_info()

    # ================================================================== dictionary

    def open_dictionary(self, path, hook: Optional[str] = None, user: bool = True, starter: bool = False) -> Task:
        """Load a dictionary in the background: a SAELens folder, or a Gemma Scope parameter file
        (or its folder; `hook` says where it reads). A user's choice reports errors in a box."""
        path = str(path)
        self.window._set_status(f"Loading dictionary {Path(path).name}…")
        task = Task("dictionary", lambda _state: load_dictionary_task(path, hook, starter),
                    title=f"Loading dictionary {Path(path).name}",
                    on_result=lambda d: self._dictionary_loaded(d, user),
                    on_error=lambda what, hint: self._dictionary_failed(what, hint))
        task.quiet = not user  # the starter at start-up: say it in the panel, no box
        self._loading = self.window.io.submit(task)
        self.show_document(self.window.current_entry())
        return self._loading

    def open_starter(self, user: bool = True) -> Optional[Task]:
        from core.paths import resources_dir

        folder = resources_dir() / "dictionaries" / "gemma3-270m-l6"  # core.features.STARTER_DICTIONARY
        if not (folder / "cfg.json").is_file():
            if user:
                self.window._show_error(f"The starter dictionary is not installed ({folder} holds no cfg.json).",
                                        "Open a dictionary folder instead (Dictionary ▸ Open Dictionary Folder…).")
            return None
        return self.open_dictionary(folder, user=user, starter=True)

    def open_at_start(self, choice) -> None:
        """At start-up: the dictionary used last (if it still exists), else the starter."""
        if choice is None:
            return
        if choice != STARTER:
            self.open_dictionary(choice, user=False)
            return
        last = self.window.settings.value(SETTINGS_KEY, "")
        if last and Path(str(last)).exists():
            self.open_dictionary(str(last), user=False)
        else:
            self.open_starter(user=False)

    def open_dictionary_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self.window, "Open Dictionary Folder (SAELens cfg.json + sae_weights.safetensors, or "
            "Gemma Scope params.npz / params.safetensors)", self.window.recent.last_folder())
        if folder:
            self.open_path(folder)

    def open_path(self, path) -> None:
        """Open a dictionary; a Gemma Scope parameter file does not say where it reads, so ask."""
        path = Path(path)
        params = needs_hook(path)
        if params is None:
            self.open_dictionary(path)
            return
        layer = re.search(r"layer_(\d+)", str(path))
        guess = f"resid_post.{layer.group(1) if layer else self.window.layer}"
        dialog = QInputDialog(self.window)
        dialog.setWindowTitle("Where does the dictionary read?")
        dialog.setLabelText(f"{params.name} holds only weights. Give the hook it was trained on "
                            "(resid_post.L = the output of block L; mlp_in.L, mlp_out.L):")
        dialog.setTextValue(guess)
        if self._hook_dialog is not None:
            self._hook_dialog.deleteLater()
        dialog.textValueSelected.connect(lambda hook: self.open_dictionary(path, hook=hook.strip()))
        dialog.open()
        self._hook_dialog = dialog

    def _dictionary_loaded(self, d: Dictionary, user: bool) -> None:
        self._loading = None
        self._gen += 1
        d.gen = self._gen
        self.dictionary = d
        self._forget_results()
        self.feature = -1
        self.bars.select_feature(-1)
        self._check_fit()
        if user and d.fit_error:
            self.window._show_error(*d.fit_error)
        if user:
            self.window.settings.setValue(SETTINGS_KEY, "" if d.starter else d.source)
        msg = f"Loaded {d.describe()}."
        if d.labels_error:
            msg += f" Its labels could not be read: {d.labels_error}"
        self.window._set_status(msg)
        self._update_info()
        if self.dashboard is not None:
            self.dashboard.history.clear()
            self.dashboard.pos = -1
            self.dashboard.show_message("Click a feature bar to see its dashboard.")
        QTimer.singleShot(0, self.schedule_index)
        self.dictionary_changed.emit()
        self.refresh()
        self.window.refresh_tokens()

    def _dictionary_failed(self, what: str, hint: str) -> None:
        self._loading = None
        if self.dictionary is None:
            self.bars.show_message(f"The dictionary could not be loaded.\n\n{what}\n{hint}".strip())

    def _check_fit(self) -> None:
        d = self.dictionary
        if d is None:
            return
        d.hook, d.fit_error = None, None
        teacher = self.window.teacher
        if teacher is None:
            return
        from core.dictionaries import check_fits
        from core.errors import DistillscopeError

        try:
            d.hook = check_fits(d.sae, teacher)
        except DistillscopeError as exc:
            d.fit_error = (exc.what, exc.hint)

    def ready(self) -> bool:
        d = self.dictionary
        return d is not None and d.hook is not None and self.window.teacher is not None

    def _update_info(self) -> None:
        d = self.dictionary
        if d is None:
            self.bars.set_dictionary_info("No dictionary loaded")
            return
        info = d.describe()
        if self._index is not None:
            info += f" · index of {self._index.index.n_tokens:,} corpus tokens"
        elif self._index_task is not None and self._index_task.outcome is None:
            info += " · building the feature index…"
        self.bars.set_dictionary_info(info)

    # ================================================================== teacher, corpus, vectors

    def _forget_results(self) -> None:
        """Drop every score, projection, dashboard and the index: they belong to the old
        dictionary or teacher."""
        self._docs.clear()
        self._pending.clear()
        self._projections.clear()
        self._class_tokens.clear()
        self._dashboards.clear()
        self._drop_index()

    def _teacher_changed(self) -> None:
        self._forget_results()
        self._check_fit()
        self._update_info()
        QTimer.singleShot(0, self.schedule_index)  # after the window has queued its extraction

    def _corpus_changed(self) -> None:
        self._drop_index()
        self._class_tokens.clear()
        self._projections.clear()
        self._dashboards.clear()
        if self.bars.compare[0] == "document":  # its row may now hold another document
            self.bars.set_compare("none")
        self.entries_changed()
        self._update_info()
        QTimer.singleShot(0, self.schedule_index)

    def entries_changed(self) -> None:
        """The documents list changed (a corpus opened, a text pasted): the compare choices."""
        from core.documents import snippet

        w = self.window
        classes = collections.Counter(d.label for d in w.corpus.documents if d.label)
        self.bars.set_compare_choices(sorted(classes.items()),
                                      [(e.doc.id, e.doc.label or "pasted", snippet(e.doc.text, 90))
                                       for e in w.entries], w.student_name if w.student is not None else "")

    def _student_changed(self) -> None:
        """A student opened (then its bars go beside the teacher's) or closed."""
        self._student_vectors.clear()
        self._student_pending.clear()
        self.entries_changed()
        if self.window.student is not None:
            self.bars.set_compare("student")
        elif self.bars.compare[0] == "student":
            self.bars.set_compare("none")
        self.refresh()

    def _vectors_ready(self, layer: int) -> None:
        d = self.dictionary
        if d is not None and d.hook is not None and d.hook.layer == layer:
            self.refresh()

    def reference(self):
        """(Reference, key, note) for projection scores: the open corpus' pooled statistics at
        the dictionary's hook when computed, else the reference shipped with the dictionary."""
        d, w = self.dictionary, self.window
        if d is None or d.hook is None:
            return None, None, ""
        from core.features import Reference

        if d.hook.kind == "resid_post":
            cv = w._vectors.get(d.hook.layer)
            if cv is not None:
                source = f"{len(cv.ids):,} documents of {w.corpus.name}"
                return (Reference(cv.mean, cv.std, source, d.hook.name, len(cv.ids)), ("corpus", w._gen, d.hook.layer),
                        f"z-normalized against the open corpus ({source}, pooled at {d.hook.name})")
            self._schedule_vectors()
        ref = d.file_reference
        if ref is not None and ref.mean.numel() == d.sae.d_in:
            return ref, ("file", d.gen), f"z-normalized against the dictionary's reference ({ref.source})"
        return None, None, ""

    def _schedule_vectors(self) -> None:
        """The corpus' document vectors at the dictionary's layer, when the token view is at another."""
        d, w = self.dictionary, self.window
        if not (self.ready() and w.corpus.documents) or d.hook.layer == w.layer:
            return  # the window computes its own layer's vectors
        t = self._vectors_task
        if t is not None and t.outcome is None and t.layer == d.hook.layer and t.gen == w._gen:
            return
        from gui.main_window import _corpus_vectors

        teacher, docs, layer, gen = w.teacher, list(w.corpus.documents), d.hook.layer, w._gen
        task = Task("feature-vectors", lambda state: _corpus_vectors(teacher, docs, layer, state),
                    title=f"Document vectors at layer {layer} (for the feature bars)",
                    on_result=lambda cv: w._vectors_done(gen, layer, cv))
        task.layer, task.gen = layer, gen
        self._vectors_task = w.runner.submit(task)

    # ================================================================== feature index

    def index(self):
        return None if self._index is None else self._index.index

    def _drop_index(self) -> None:
        if self._index_task is not None and self._index_task.outcome is None:
            self.window.runner.cancel("feature-index")
        self._index = None
        self._index_key = None
        self._index_task = None
        self._index_error = ""
        self.bars.set_frequency(None)

    def index_building(self) -> bool:
        return self._index_task is not None and self._index_task.outcome is None

    def schedule_index(self, force: bool = False) -> Optional[Task]:
        """Build (or load from disk) the feature index of the open corpus, once per dictionary,
        teacher and corpus. A build the user cancelled starts again only when asked (force)."""
        d, w = self.dictionary, self.window
        if not (self.ready() and w.corpus.documents):
            return None
        key = (d.gen, w._gen)
        if self._index_key == key and (self._index is not None or self.index_building()):
            return self._index_task
        if self._index_declined == key and not force:
            return None
        teacher, docs, sae, hook, name = w.teacher, list(w.corpus.documents), d.sae, d.hook, w.corpus.name
        task = Task("feature-index", lambda state: build_index(teacher, docs, sae, hook, name, state),
                    title=f"Feature index of {d.name} on {name}",
                    on_result=lambda result: self._index_done(key, result),
                    on_error=lambda what, hint: self._index_failed(key, what))
        self._index_key, self._index, self._index_error = key, None, ""
        self._index_declined = None
        self._index_task = w.runner.submit(task)
        self._update_info()
        self._reload_dashboard()
        return self._index_task

    def _index_done(self, key, result: IndexResult) -> None:
        d = self.dictionary
        if d is None or key != (d.gen, self.window._gen):
            return
        self._index = result
        for f in result.auto:  # automatic labels fill in what the dictionary's labels.json lacks
            if f not in d.labels:
                d.labels.set_auto(f, result.auto.get(f))
        self._dashboards.clear()
        self._class_tokens.clear()
        self.bars.set_frequency(result.index.frequency.numpy())
        self._update_info()
        self.window._set_status(f"Feature index ready: {result.index.n_tokens:,} tokens of "
                                f"{result.corpus_name}; dashboards and search by token are available.")
        self.index_ready.emit()
        self.refresh()
        self._reload_dashboard()

    def _index_failed(self, key, what: str) -> None:
        if key == self._index_key:
            self._index_error = what
            self._update_info()
            self._reload_dashboard()

    def _task_cancelled(self, task: Task) -> None:
        if task is self._index_task:
            self._index_declined = self._index_key
            self._index_task = None
            self._index_key = None
            self._update_info()
            self._reload_dashboard()

    def _corpus_note(self) -> str:
        w = self.window
        if self._index is not None:
            return f"Statistics and contexts from {self._index.index.n_tokens:,} tokens of {self._index.corpus_name}."
        if not w.corpus.documents:
            return "Open a corpus: contexts, frequencies and the histogram come from its tokens."
        if w.teacher is None:
            return "Waiting for the teacher model."
        if self.index_building():
            return "Building the feature index of the open corpus (progress in the status bar)…"
        if self._index_error:
            return f"The feature index could not be built: {self._index_error}"
        return "The feature index was not built (cancelled). Build it to see contexts and frequencies."

    # ================================================================== the document's features

    def job_for_layer(self, layer: int) -> Optional[ScoreJob]:
        """For the token view's task: score its document in the same pass when the dictionary
        reads the residual stream at the layer the token view shows."""
        d = self.dictionary
        if self.ready() and d.hook.kind == "resid_post" and d.hook.layer == layer:
            return ScoreJob(d.sae, d.gen)
        return None

    def store(self, doc_key, gen: int, features: DocFeatures) -> None:
        """Features computed by the token view's task."""
        if self.dictionary is None or gen != self.dictionary.gen:
            return
        self._remember(doc_key, features)

    def _remember(self, doc_key, features: DocFeatures) -> None:
        self._docs[doc_key] = features
        self._docs.move_to_end(doc_key)
        while len(self._docs) > DOC_CACHE:
            self._docs.popitem(last=False)

    def features_of(self, entry) -> Optional[DocFeatures]:
        return None if entry is None else self._docs.get((entry.doc.id, entry.doc.text))

    def refresh(self) -> None:
        self.show_document(self.window.current_entry())

    def show_document(self, entry) -> None:
        """Show the features of `entry` (the selected document), computing them if needed."""
        d, w, bars = self.dictionary, self.window, self.bars
        if d is None:
            if self._loading is not None and self._loading.outcome is None:
                bars.show_message("Loading the dictionary…")
            else:
                bars.show_message("No dictionary is loaded.\n\nDictionary ▸ Open Dictionary Folder… loads "
                                  "a SAELens folder (cfg.json + sae_weights.safetensors) or Gemma Scope "
                                  "parameters; Dictionary ▸ Use Starter Dictionary loads the one that "
                                  "ships for the bundled teacher.")
            return
        if w.teacher is None:
            bars.show_message("Waiting for the teacher model…")
            return
        if d.fit_error:
            what, hint = d.fit_error
            bars.show_message(f"The dictionary {d.name} does not fit {w.teacher.name}.\n\n{what}\n\n{hint}")
            return
        if entry is None:
            bars.show_message("Select a document to see its features." if w.entries
                              else "Open a document to see its features.")
            return
        key = (entry.doc.id, entry.doc.text)
        features = self._docs.get(key)
        if features is None:
            self._request(entry, key)
            return
        self._docs.move_to_end(key)
        self._show_scores(entry, features)

    def _request(self, entry, key) -> None:
        self._computing.start()
        if key in self._pending or self._token_task_scores(key):
            return
        self._submit_features(entry, key, "features")

    def _token_task_scores(self, key) -> bool:
        """Whether the window's running token task scores this document for this dictionary."""
        t = self.window._token_task
        return (t is not None and t.outcome is None and t.token_key[:2] == key
                and getattr(t, "score_gen", None) == self.dictionary.gen)

    def _submit_features(self, entry, key, task_key: str) -> None:
        d, w = self.dictionary, self.window
        shadow, text, sae, hook, gen = w.shadow, entry.doc.text, d.sae, d.hook, d.gen
        task = Task(task_key, lambda state: score_document(shadow, text, sae, hook, state),
                    on_result=lambda features: self._features_done(gen, key, features),
                    on_error=lambda what, hint: self._features_failed(gen, key, what, hint))
        task.quiet = True
        self._pending.add(key)
        w.inspector.submit(task)

    def _features_done(self, gen: int, key, features: DocFeatures) -> None:
        self._pending.discard(key)
        if self.dictionary is None or gen != self.dictionary.gen:
            return
        self._remember(key, features)
        entry = self.window.current_entry()
        if entry is not None and (self.feature >= 0 or self._compare_key() == key
                                  or (entry.doc.id, entry.doc.text) == key):
            self.refresh()
            self.window.refresh_tokens()

    def _features_failed(self, gen: int, key, what: str, hint: str) -> None:
        self._pending.discard(key)
        entry = self.window.current_entry()
        if entry is not None and (entry.doc.id, entry.doc.text) == key and self.dictionary is not None \
                and gen == self.dictionary.gen:
            self.bars.show_message(f"Could not score the document.\n\n{what}\n{hint}".strip())

    def _show_computing(self) -> None:
        entry = self.window.current_entry()
        if entry is not None and self.ready() and self.features_of(entry) is None:
            self.bars.show_message("Computing…", header=f"Features of {entry.doc.id}")

    # -- scores per method ---------------------------------------------------------------------

    def _values(self, features: DocFeatures, method: str, proj_key):
        """(values [d_sae] as numpy, value name) of one document, or (None, why not)."""
        if method == "tokens-mean":
            return features.mean.numpy(), "mean activation"
        if method == "tokens-max":
            return features.peak.numpy(), "max activation"
        ref, ref_key, _note = self.reference()
        if ref is None:
            return None, self._no_reference_message()
        cache_key = (proj_key, ref_key)
        values = self._projections.get(cache_key)
        if values is None:
            from core.features import projection_scores

            values = projection_scores(features.pooled, self.dictionary.sae, ref.mean, ref.std).values.numpy()
            if len(self._projections) > 4 * DOC_CACHE:
                self._projections.clear()
            self._projections[cache_key] = values
        return values, "projection score"

    def _no_reference_message(self) -> str:
        d, w = self.dictionary, self.window
        if d.hook.kind == "resid_post" and w.corpus.documents:
            return (f"Projection scores are z-normalized against the open corpus' document vectors at "
                    f"{d.hook.name}, which are being computed (see the status bar)…")
        return ("Projection scores need a reference distribution of document vectors: open a corpus, "
                "or use a dictionary folder that has reference.safetensors. Token scores work without.")

    def _compare_key(self):
        kind, value = self.bars.compare
        if kind == "document" and value.isdigit() and int(value) < len(self.window.entries):
            e = self.window.entries[int(value)]
            return (e.doc.id, e.doc.text)
        return None

    def _compare_values(self, method: str):
        """(values or None, name, note): what the document is compared with, or why not yet."""
        kind, value = self.bars.compare
        w = self.window
        if kind == "document":
            key = self._compare_key()
            if key is None:
                return None, "", ""
            entry = w.entries[int(value)]
            features = self._docs.get(key)
            if features is None:
                if key not in self._pending:
                    self._submit_features(entry, key, "features-compare")
                return None, entry.doc.id, f"Computing the features of {entry.doc.id} to compare…"
            values, why = self._values(features, method, key)
            return values, entry.doc.id, ("" if values is not None else why)
        if kind == "student":
            return self._student_values(method)
        if kind == "class":
            n = sum(1 for d in w.corpus.documents if d.label == value)
            name = f"class {value} ({n:,} docs)"
            if method == "projection":
                return self._class_projection(value, name)
            return self._class_tokens_values(value, method, name)
        return None, "", ""

    def _student_values(self, method: str):
        """The student's projection scores of the selected document (the same dictionary and
        reference as the teacher's bars), or why not (yet)."""
        w, d = self.window, self.dictionary
        student, entry = w.student, w.current_entry()
        name = "student"
        if student is None or entry is None:
            return None, name, ""
        if method != "projection":
            return None, name, "The student predicts document vectors, not token activations: " \
                               "choose Projection to compare with it."
        if student.hook != d.hook.name:
            return None, name, f"The student predicts {student.hook}; the dictionary reads {d.hook.name}."
        ref, ref_key, _ = self.reference()
        if ref is None:
            return None, name, self._no_reference_message()
        key = (entry.doc.id, entry.doc.text)
        vector = self._student_vectors.get(key)
        if vector is None:
            if key not in self._student_pending:
                self._submit_student(entry, key)
            return None, name, "Computing the student's vector…"
        cache_key = (("student", key, id(student)), ref_key)
        values = self._projections.get(cache_key)
        if values is None:
            from core.features import projection_scores

            values = projection_scores(vector, d.sae, ref.mean, ref.std).values.numpy()
            self._projections[cache_key] = values
        return values, name, ""

    def _submit_student(self, entry, key) -> None:
        student, text, gen = self.window.student, entry.doc.text, self._gen

        def done(vector) -> None:
            self._student_pending.discard(key)
            if self.window.student is student and gen == self._gen:
                if len(self._student_vectors) > DOC_CACHE:
                    self._student_vectors.clear()
                self._student_vectors[key] = vector
                self.refresh()

        task = Task("features-student", lambda state: student.vectors([text], state, raw=True)[0],
                    on_result=done, on_error=lambda _w, _h: self._student_pending.discard(key))
        task.quiet = True
        self._student_pending.add(key)
        self.window.inspector.submit(task)

    def _class_projection(self, label: str, name: str):
        d, w = self.dictionary, self.window
        ref, ref_key, _ = self.reference()
        cv = w._vectors.get(d.hook.layer) if d.hook.kind == "resid_post" else None
        if ref is None or cv is None:
            return None, name, (f"Comparing with a class needs the corpus' document vectors at {d.hook.name} "
                                "(being computed)…" if d.hook.kind == "resid_post" else
                                "Comparing with a class by projection needs resid_post document vectors.")
        cache_key = (("class", label), ref_key)
        values = self._projections.get(cache_key)
        if values is None:
            from core.features import class_vector, projection_scores

            by_id = {doc.id: doc.label for doc in w.corpus.documents}
            vector = class_vector(cv.raw, [by_id.get(i) for i in cv.ids], label)
            values = projection_scores(vector, d.sae, ref.mean, ref.std).values.numpy()
            self._projections[cache_key] = values
        return values, name, ""

    def _class_tokens_values(self, label: str, method: str, name: str):
        if self._index is None:
            why = ("the feature index is being built" if self.index_building() else "build the feature index first")
            return None, name, f"Comparing with a class by token scores needs the corpus' token cache ({why})."
        key = (label, id(self._index))
        if key not in self._class_tokens:
            if key not in self._class_pending:
                self._submit_class_tokens(label, key)
            return None, name, f"Computing the token scores of {name}…"
        result = self._class_tokens[key]
        if result is None:
            return None, name, f"No document of {name} has tokens in the cache."
        mean, peak = result
        return (mean if method == "tokens-mean" else peak).numpy(), name, ""

    def _submit_class_tokens(self, label: str, key) -> None:
        w, d = self.window, self.dictionary
        cache, sae, gen = self._index.cache, d.sae, d.gen
        rows = [i for i, doc in enumerate(w.corpus.documents) if doc.label == label]

        def done(result) -> None:
            self._class_pending.discard(key)
            if self.dictionary is not None and gen == self.dictionary.gen:
                self._class_tokens[key] = result
                self.refresh()

        task = Task("features-class", lambda state: class_token_scores(cache, sae, rows, state),
                    on_result=done, on_error=lambda _w, _h: self._class_pending.discard(key))
        task.quiet = True
        self._class_pending.add(key)
        w.inspector.submit(task)

    def _show_scores(self, entry, features: DocFeatures) -> None:
        d, bars = self.dictionary, self.bars
        method = bars.method
        key = (entry.doc.id, entry.doc.text)
        values, value_name = self._values(features, method, key)
        if values is None:
            bars.show_message(value_name, header=f"Features of {entry.doc.id}")
            return
        notes = []
        if method == "projection":
            notes.append(self.reference()[2])
        n_tokens = sum(1 for b in features.is_bos if not b)
        cut = len(features.is_bos) >= DOC_MAX_LENGTH
        notes.append(f"{n_tokens:,} tokens" + (f" (the first {DOC_MAX_LENGTH:,})" if cut else ""))
        other, other_name, why = self._compare_values(method)
        if why:
            notes.append(why)
        student = self.bars.compare[0] == "student"
        if student and other is not None:
            notes.insert(0, agreement_note(values, other))
        freq = None if self._index is None else self._index.index.frequency.numpy()
        header = f"Features of {entry.doc.id}" + (f" vs {other_name}" if other is not None else "")
        bars.show_scores(header, values, d.labels.get, d.labels.is_auto, freq, " · ".join(n for n in notes if n),
                         other=other, names=("teacher", "student") if student else (entry.doc.id, other_name),
                         value_name=value_name, rank_by="either" if student else "difference")
        bars.select_feature(self.feature, d.labels.get(self.feature) if self.feature >= 0 else "")
        self._computing.stop()
        self.scores_shown.emit()

    # ================================================================== the selected feature

    def select_feature(self, feature: int) -> None:
        """Make `feature` the selected one (-1: none): its bar, the token colours, the dashboard."""
        d = self.dictionary
        if d is None or feature >= d.sae.d_sae:
            return
        self.feature = feature
        self.bars.select_feature(feature, d.labels.get(feature) if feature >= 0 else "")
        self.window.refresh_tokens()
        if feature >= 0 and self.dock is not None and self.dock.isVisible():
            self._load_dashboard(feature)

    def show_feature_tokens(self, entry, view, panel) -> bool:
        """Colour the token view by the selected feature; False (norms shown instead) when no
        feature is selected or the document's features are not there yet."""
        f, d = self.feature, self.dictionary
        if f < 0 or d is None or entry is None or view is None:
            return False
        features = self.features_of(entry)
        if features is None or len(features.tokens) != len(view.tokens):
            return False
        values = features.column(f)
        label = d.labels.get(f)
        short = label if len(label) <= 48 else label[:47] + "…"
        top = None
        if self._index is not None:
            top = float(self._index.index.max[f]) or None
        n = sum(1 for b in view.is_bos if not b)
        active = sum(1 for v, b in zip(values, view.is_bos) if v > 0 and not b)
        panel.show_tokens(view.tokens, values, view.is_bos,
                          header=f"{entry.doc.id}  ·  feature {f}  ·  active on {active} of {n} tokens",
                          quantity=f"feature {f} activation",
                          caption=f"feature {f}" + (f" {short}" if short else ""), feature=f,
                          top=top)
        return True

    # ================================================================== dashboard

    def ensure_dashboard(self) -> FeatureDashboard:
        if self.dock is None:
            self.dashboard = FeatureDashboard()
            self.dashboard.feature_requested.connect(self._dashboard_navigate)
            self.dashboard.label_edited.connect(self.edit_label)
            self.dashboard.label_reset.connect(self.reset_label)
            self.dashboard.document_requested.connect(self.window.select_corpus_document)
            self.dashboard.export_requested.connect(self.export_dashboard_dialog)
            self.dashboard.build_index_requested.connect(lambda: self.schedule_index(force=True))
            dock = QDockWidget("Feature dashboard", self.window)
            dock.setObjectName("feature-dashboard")
            dock.setWidget(self.dashboard)
            self.window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            # Floating over the documents list: the Inspect tab keeps its width at 1280 px.
            dock.setFloating(True)
            dock.resize(self.dashboard.sizeHint())
            dock.move(self.window.mapToGlobal(QPoint(24, 90)))
            dock.hide()
            self.dock = dock
        return self.dashboard

    def open_dashboard(self, feature: int) -> None:
        d = self.dictionary
        if d is None or not 0 <= feature < d.sae.d_sae:
            return
        self.ensure_dashboard()
        if feature != self.feature:
            self.select_feature(feature)
        self.dock.show()
        self.dock.raise_()
        self._load_dashboard(feature)

    def _dashboard_navigate(self, feature: int) -> None:
        self.select_feature(feature)
        self._load_dashboard(feature)

    def _show_dashboard_data(self, data: DashboardData) -> None:
        w = self.window
        self.dashboard.show_data(data, self.dictionary.labels.get)
        # "Build feature index" only where a build can start and none is running.
        self.dashboard.build_button.setVisible(self._index is None and not self.index_building()
                                               and w.teacher is not None and bool(w.corpus.documents))
        self.dashboard_shown.emit(data.feature)

    def _reload_dashboard(self) -> None:
        if self.dock is not None and self.dock.isVisible() and self.dashboard.feature >= 0:
            self._load_dashboard(self.dashboard.feature)

    def _load_dashboard(self, feature: int) -> None:
        d, w = self.dictionary, self.window
        dash = self.ensure_dashboard()
        dash.begin(feature, d.sae.d_sae, d.labels.get(feature), d.labels.is_auto(feature))
        key = (d.gen, id(self._index), feature)
        data = self._dashboards.get(key)
        if data is not None:
            self._dashboards.move_to_end(key)
            self._show_dashboard_data(data)
            return
        index = self.index()
        teacher = w.shadow if w.teacher is not None else None
        rows = {doc.id: i for i, doc in enumerate(w.corpus.documents)}
        note, sae = self._corpus_note(), d.sae

        def done(data: DashboardData) -> None:
            if self.dictionary is None or self.dictionary.gen != key[0]:
                return
            self._dashboards[key] = data
            while len(self._dashboards) > DASHBOARD_CACHE:
                self._dashboards.popitem(last=False)
            if self.dashboard.feature == feature:
                self._show_dashboard_data(data)

        def failed(what: str, hint: str) -> None:
            if self.dashboard.feature == feature:
                self.dashboard.contexts_stack.show_message(f"{what}\n{hint}".strip())
                self.dashboard.stats.setText(what)

        task = Task("dashboard", lambda state: dashboard_data(feature, sae, index, teacher, rows, note, state),
                    on_result=done, on_error=failed)
        task.quiet = True
        self._dashboard_task = w.inspector.submit(task)

    # ================================================================== labels

    def edit_label(self, feature: int, text: str) -> bool:
        """A person's label for `feature`, saved at once in the dictionary's labels.json."""
        d = self.dictionary
        if d is None or feature < 0:
            return False
        text = text.strip()
        if text == d.labels.get(feature) and (d.labels.is_user(feature) or not text):
            return False  # unchanged (leaving the field is not an edit)
        if text == d.labels.get(feature) and d.labels.is_auto(feature):
            return False
        if d.labels_error:
            self.window._show_error(f"The labels of {d.name} are not saved: its labels.json could not be read.",
                                    f"{d.labels_error} Fix or delete the file, then open the dictionary again.")
            return False
        d.labels.set(feature, text)
        ok = self._save_labels()
        self._labels_changed(feature)
        return ok

    def reset_label(self, feature: int) -> bool:
        """Back to the automatic label (from the feature index of the open corpus, if built)."""
        d = self.dictionary
        if d is None or feature < 0 or d.labels_error:
            return False
        d.labels.reset(feature)
        if self._index is not None:
            d.labels.set_auto(feature, self._index.auto.get(feature))
        ok = self._save_labels()
        self._labels_changed(feature)
        return ok

    def _save_labels(self) -> bool:
        d = self.dictionary
        try:
            path = d.labels.save(d.folder)
        except OSError as exc:
            self.window._show_error(f"Could not save the labels to {d.folder}: {exc.strerror or exc}.",
                                    "Copy the dictionary folder to a writable place and open that copy "
                                    "(Dictionary ▸ Open Dictionary Folder…).")
            return False
        self.window._set_status(f"Saved labels to {path}.")
        return True

    def _labels_changed(self, feature: int) -> None:
        d = self.dictionary
        self.bars.refresh_labels()
        if self.feature == feature:
            self.bars.select_feature(feature, d.labels.get(feature))
            self.window.refresh_tokens()
        if self.dashboard is not None and self.dashboard.feature == feature:
            self.dashboard.set_label(d.labels.get(feature), d.labels.is_auto(feature))
        if self.dashboard is not None and self.dashboard.data is not None:
            self.dashboard._show_nearest(self.dashboard.data, d.labels.get)
        if self.search is not None and self.search.isVisible() and self.search.mode == "label":
            self.search.search(self.search.query.text())

    # ================================================================== search

    def open_search(self) -> FeatureSearch:
        if self.search is None:
            self.search = FeatureSearch(self.window)
            self.search.search_requested.connect(self.run_search)
            self.search.feature_chosen.connect(self.open_dashboard)
        self.search.show()
        self.search.raise_()
        self.search.activateWindow()
        self.search.query.setFocus()
        return self.search

    def run_search(self, mode: str, text: str) -> None:
        search, d = self.search, self.dictionary
        if d is None:
            search.show_results([], "No dictionary is loaded.")
            return
        if mode == "label":
            from core.features import search_labels

            if not text.strip():
                search.show_results([], f"Type words of a label. {len(d.labels):,} of {d.sae.d_sae:,} "
                                    "features have one.")
                return
            found = search_labels(d.labels, text)
            freq = None if self._index is None else self._index.index.frequency
            if freq is not None:  # the features that fire most often first
                found.sort(key=lambda f: -float(freq[f]))
            hits = [SearchHit(f, d.labels.get(f)) for f in found[:500]]
            search.show_results(hits, f"{len(found):,} features whose label contains {text.strip()!r}"
                                + (" (first 500)" if len(found) > 500 else "") + ".")
            self.search_shown.emit()
            return
        variants = token_variants(text)
        if not variants:
            search.show_results([], "Type a token, e.g. ' because' (in quotes to keep a leading space).")
            return
        if self._index is None:
            why = "It is being built (see the status bar)." if self.index_building() else \
                "Open a corpus; it is built from the corpus' tokens."
            search.show_results([], f"Search by token needs the feature index. {why}")
            return
        index, teacher, gen = self._index.index, self.window.shadow, d.gen

        def done(results) -> None:
            if self.dictionary is None or self.dictionary.gen != gen or self.search.query.text() != text:
                return
            hits, notes = [], []
            for variant, token, occurrences, found in results:
                notes.append(f"{_quoted(token)}: {occurrences:,} occurrences in the corpus, "
                             f"{len(found)} features" if occurrences else f"{_quoted(token)}: not in the corpus")
                hits += [SearchHit(h.feature, self.dictionary.labels.get(h.feature), h.score,
                                   f"fires on {h.fire_rate:.0%} of the {_quoted(token)} tokens; "
                                   f"{h.share:.0%} of its activation is on them; mean {h.mean:.3g}")
                         for h in found]
            self.search.show_results(hits, "; ".join(notes) + ". The features most specific to the token "
                                     "first: score = √(fire rate × share of the feature's activation).")
            self.search_shown.emit()

        task = Task("search", lambda _state: search_tokens(index, teacher, variants), on_result=done,
                    on_error=lambda what, hint: self.search.show_results([], f"{what} {hint}"))
        task.quiet = True
        search.show_status("Searching…")
        self.window.inspector.submit(task)

    # ================================================================== export

    def export_bars_dialog(self, kind: Optional[str] = None) -> None:
        if not self.bars.rows:
            self.window._show_error("There are no feature bars to export.",
                                    "Load a dictionary and select a document first.")
            return
        entry = self.window.current_entry()
        base = f"{entry.doc.id if entry else 'document'}-features"
        filters = {"png": "PNG image (*.png)", "csv": "CSV (*.csv)"}
        chosen = [filters[kind]] if kind else list(filters.values())
        path, used = QFileDialog.getSaveFileName(self.window, "Export Feature Bars",
                                                 f"{base}.{kind or 'png'}", ";;".join(chosen))
        if path:
            self.export_bars(path, "csv" if "csv" in used.lower() and not path.lower().endswith(".png") else None)

    def export_bars(self, path: str, kind: Optional[str] = None) -> Optional[str]:
        """PNG (2x) or CSV by `kind` or the path's suffix (a missing suffix is added)."""
        kind = kind or ("csv" if str(path).lower().endswith(".csv") else "png")
        write = self.bars.write_csv if kind == "csv" else self.bars.export_png
        out = self._write_export(path, kind, write, "Choose another place.")
        if out:
            self.last_export = out
        return out

    def _write_export(self, path: str, kind: str, write, hint: str) -> Optional[str]:
        """Write one export to `path` (its suffix added if missing): failures go to the error box,
        success to the status bar. Returns the path written, or None."""
        if not str(path).lower().endswith("." + kind):
            path = f"{path}.{kind}"
        try:
            write(path)
        except (OSError, ValueError) as exc:
            self.window._show_error(f"Could not write {path}: {getattr(exc, 'strerror', None) or exc}.", hint)
            return None
        self.window._set_status(f"Exported {path}.")
        return str(path)

    def export_dashboard_dialog(self, kind: str) -> None:
        dash = self.dashboard
        if dash is None or dash.feature < 0:
            return
        suffix, name = ("png", "PNG image (*.png)") if kind == "png" else ("csv", "CSV (*.csv)")
        what = "dashboard" if kind == "png" else "contexts"
        path, _ = QFileDialog.getSaveFileName(self.window, f"Export feature {dash.feature}'s {what}",
                                              f"feature-{dash.feature}-{what}.{suffix}", name)
        if path:
            self.export_dashboard(path, kind)

    def export_dashboard(self, path: str, kind: str) -> Optional[str]:
        write = self.dashboard.export_png if kind == "png" else self.dashboard.write_contexts_csv
        return self._write_export(path, kind, write, "Choose another place, or wait for the contexts to appear.")

    # ================================================================== shutdown

    def shutdown(self) -> None:
        for w in (self.search, self.dock, self._hook_dialog):
            if w is not None:
                w.close()


def needs_hook(path: Path) -> Optional[Path]:
    """The Gemma Scope parameter file at `path` (a file, or a folder holding one and no SAELens
    cfg.json) when nothing beside it says where it reads; None otherwise."""
    if path.is_dir():
        if (path / "cfg.json").is_file():
            return None
        candidates = [path / n for n in ("params.npz", "params.safetensors") if (path / n).is_file()]
        if not candidates:
            return None
        params = candidates[0]
    elif path.suffix.lower() in (".npz", ".safetensors") and path.name != "sae_weights.safetensors":
        params = path
    else:
        return None
    return None if (params.parent / "config.json").is_file() else params


__all__ = ["FeatureSession", "Dictionary", "DocFeatures", "ScoreJob", "inspect_document", "needs_hook"]
