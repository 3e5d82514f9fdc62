"""The Steering tab's controller: directions with strengths, and continuations generated on worker
threads and streamed into the panes (issue 6).

Each model (the window's teacher as the base, and an optional variant) has its own worker thread
and its own twin of the model (gui/shadow.py: module copies sharing the weights), so a steering
hook never fires on another thread's forward pass. One generation task runs per model at a time;
a newer request cancels the older (gui/worker.py: same task key).

A continuation is a `Stream`: its pieces so far, its token ids and compute time, and the suspended
core generator that makes the rest (core.steering.generate_stream holds no hook between tokens).
Streams are kept per (model, prompt, settings[, directions and strengths]), so:
  - a slider move regenerates only the steered panes: the unsteered stream is the same object,
    already done or resumed where it stopped;
  - a cancelled stream resumes where it stopped when it is asked for again, and dragging a slider
    back to an earlier value shows that continuation at once;
  - no stale text reaches a pane: a pane shows only the stream it is bound to, and a slider move
    binds the steered panes to a new one.
The worker advances the streams of one task in turn, a piece each, so unsteered and steered text
grow side by side; it appends to the stream and tells the GUI thread through a relay object that
lives there. The GUI thread only reads pieces (strings), never tensors.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
import traceback
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QFileDialog

from core import paths
from gui.steering_view import KINDS, MODELS, AddDirectionDialog, SteeringView
from gui.worker import Task, TaskRunner, describe_error

DEBOUNCE_MS = 300  # a slider that has rested this long regenerates
STREAMS_PER_MODEL = 48  # continuations kept per model (each holds its small KV cache)
KIND_TEXT = {"feature": "dictionary feature", "contrast": "saved contrast", "crosscoder": "crosscoder latent",
             "file": "vector file"}


class Stream:
    """One continuation: pieces of text as generated, their token ids, the compute seconds, and
    the suspended generator that makes the rest. Advanced only on its model's worker thread."""

    def __init__(self, key):
        self.key = key
        self.pieces: list[str] = []
        self.token_ids: list[int] = []
        self.seconds = 0.0
        self.done = False
        self.error = ""
        self.gen = None
        self.norms: dict = {}  # hook -> the typical (centred) norm the strengths were scaled by

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def describe(self, running: bool) -> str:
        n = len(self.token_ids)
        rate = f" · {n / self.seconds:.1f} tok/s" if n and self.seconds > 0 else ""
        if self.error:
            return self.error
        if self.done:
            return f"{n} tokens{rate} · done"
        if running:
            return f"{n} tokens{rate} · generating…"
        return f"{n} tokens{rate} · stopped (Generate continues)" if n else "waiting…"


class ModelSlot:
    """A loaded model the tab generates with: its own twin, name, and its streams."""

    def __init__(self, role: str, teacher, name: str, source: str):
        self.role, self.teacher, self.name, self.source = role, teacher, name, source
        self.streams: collections.OrderedDict = collections.OrderedDict()

    def stream(self, key, bound: set) -> Stream:
        s = self.streams.get(key)
        if s is None:
            s = self.streams[key] = Stream(key)
            for old in list(self.streams):
                if len(self.streams) <= STREAMS_PER_MODEL:
                    break
                if id(self.streams[old]) not in bound:
                    del self.streams[old]
        self.streams.move_to_end(key)
        return s


class Entry:
    """A direction on the tab: where it came from, the resolved core Direction, its strength."""

    def __init__(self, uid: int, source: dict, direction, name: str, alpha: float, apply_to: str,
                 per_role: Optional[dict] = None):
        self.uid, self.source, self.direction, self.name = uid, source, direction, name
        self.alpha, self.apply_to = alpha, apply_to
        self.per_role = per_role or {}  # role -> Direction, for a latent steering each model with its own row

    def steers(self, role: str) -> bool:
        return self.apply_to in ("both", role)

    def direction_for(self, role: str):
        return self.per_role.get(role, self.direction)


class _Relay(QObject):
    """Lives on the GUI thread; the workers emit these and Qt queues them here."""

    piece = Signal(object)  # Stream
    ended = Signal(object)  # Stream


def own_twin(teacher):
    """A twin of the window's teacher for this tab's threads. Hooks that another thread's core
    call had attached at the moment of copying are dropped from the copy."""
    from gui.shadow import twins

    twin = twins(teacher)[1]
    for module in twin.model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key, fn in list(hooks.items()):
                if getattr(fn, "__module__", "").startswith("core."):
                    del hooks[key]
    return twin


def run_streams(jobs, relay: _Relay, state) -> None:
    """Worker body: advance every unfinished stream of `jobs` [(stream, make)] a piece at a time,
    in turn, until all are done or the task is cancelled (checked before every piece). `make`
    builds a stream's generator the first time (measuring the norms: not counted as compute)."""
    active = [job for job in jobs if not job[0].done]
    while active:
        for job in list(active):
            state.check_cancelled()
            stream, make = job
            try:
                if stream.gen is None:
                    stream.gen = make(stream)
                start = time.perf_counter()
                try:
                    piece = next(stream.gen)
                finally:
                    stream.seconds += time.perf_counter() - start
            except StopIteration:
                stream.gen, stream.done = None, True
            except Exception as exc:
                from core.errors import DistillscopeError

                if not isinstance(exc, DistillscopeError):
                    traceback.print_exc()
                what, hint = describe_error(exc)
                stream.gen, stream.done, stream.error = None, True, f"{what} {hint}".strip()
            else:
                stream.pieces.append(piece)
                relay.piece.emit(stream)
                continue
            active.remove(job)
            relay.ended.emit(stream)


def departure(unsteered: Optional[Stream], steered: Optional[Stream]) -> Optional[int]:
    """The first character where the steered continuation differs from the unsteered one, as far
    as both are known; None while they agree (or one is missing)."""
    if unsteered is None or steered is None or unsteered is steered:
        return None
    a, b = unsteered.text, steered.text
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    if i < n or (unsteered.done and len(b) > len(a)):
        return i
    return None


def _maker(teacher, prompt: str, terms: list, max_new_tokens: int, temperature: float, seed: Optional[int]):
    def make(stream: Stream):
        from core.steering import Steering, generate_stream

        steering = Steering(teacher, terms)  # measures the norms now (cached per model and hook)
        stream.norms = dict(steering.norms)
        return generate_stream(teacher, prompt, steering=steering, max_new_tokens=max_new_tokens,
                               temperature=temperature, seed=seed, token_ids=stream.token_ids)

    return make


def _strengths_text(entries, role: str) -> str:
    """A steered pane's subtitle: the directions that steer it, those at 0 only counted (a long
    list of idle sliders would push the one that moves out of sight)."""
    if not entries:
        return "no direction steers this model"
    moving = [f"{e.name} = {e.alpha:+.2f}" + _gain_text(e.direction_for(role)) for e in entries if e.alpha != 0]
    idle = len(entries) - len(moving)
    if idle:
        moving.append(f"{idle} more at 0" if moving else f"{'all' if idle > 1 else 'the'} direction{'s' * (idle > 1)} at 0")
    return " · ".join(moving)


def _gain_text(direction) -> str:
    gain = getattr(direction, "gain", 1.0)
    return "" if gain == 1.0 else f" × {gain:.2f} (own row)"


def _resolve(source: dict, teacher, saes: dict):
    """A Direction, or for a crosscoder latent that steers each model with its own decoder row
    {role: Direction} (the base's checked against the base)."""
    from core.steering import OWN_DECODER, direction_from_source

    if source.get("kind") == "crosscoder" and source.get("decoder") == OWN_DECODER:
        return {"base": direction_from_source(source, teacher, saes, model="base"),
                "variant": direction_from_source(source, None, saes, model="variant")}
    return direction_from_source(source, teacher, saes)


def _load_variant(folder: str, base, state):
    from core.errors import DistillscopeError
    from core.models import load_teacher

    teacher = load_teacher(folder, state=state)
    state.check_cancelled()
    warning = ""
    if base is not None:
        try:
            from core.pairs import check_same_tokenizer

            check_same_tokenizer(base, teacher)
        except DistillscopeError as exc:
            warning = f"{exc.what} The panes still compare them, but directions made for one may not mean the same in the other."
        except ImportError:
            pass
    return teacher, warning


class SteeringSession(QObject):
    direction_added = Signal(int)  # uid
    direction_failed = Signal(str)
    generated = Signal()  # every generation task has ended (finished or cancelled)
    variant_changed = Signal()
    preset_saved = Signal(str)
    preset_loaded = Signal()
    preset_failed = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.view = SteeringView()
        self.slots: dict[str, Optional[ModelSlot]] = {"base": None, "variant": None}
        self.entries: dict[int, Entry] = {}
        self.tasks: dict[str, Optional[Task]] = {"base": None, "variant": None}
        self._runners: dict[str, Optional[TaskRunner]] = {"base": None, "variant": None}
        self._uids = itertools.count(1)
        self._saes: dict = {}  # dictionary folder -> loaded SAE, shared with resolution tasks
        self._pending: set = set()  # uids being resolved
        self._generate_when_resolved = False
        self._variant_task: Optional[Task] = None
        self._variant_loading = ""
        self._generated_once = False
        self.error_box = None
        self.dialog: Optional[AddDirectionDialog] = None
        self._relay = _Relay(self)
        q = Qt.ConnectionType.QueuedConnection
        self._relay.piece.connect(self._on_piece, q)
        self._relay.ended.connect(self._on_ended, q)
        self.debounce = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self.debounce.timeout.connect(self.generate)

        v = self.view
        v.generate_requested.connect(self.generate)
        v.cancel_requested.connect(self.cancel)
        v.add_direction_requested.connect(self.open_add_dialog)
        v.alpha_changed.connect(self._alpha_changed)
        v.apply_changed.connect(self._apply_changed)
        v.remove_requested.connect(self.remove_direction)
        v.variant_requested.connect(self.choose_variant)
        v.variant_cleared.connect(self.clear_variant)
        v.save_preset_requested.connect(self.save_preset_dialog)
        v.load_preset_requested.connect(self.load_preset_dialog)
        window.teacher_changed.connect(self._teacher_changed)
        window.features.dictionary_changed.connect(self._refresh_dialog)
        self._show_empty_panes()
        v.show_status("Waiting for the teacher to load…" if window.teacher is None else "")

    # ================================================================== models

    def _runner(self, role: str) -> TaskRunner:
        runner = self._runners[role]
        if runner is None:
            # Base and variant generate at once: share the cores the GUI thread does not need.
            threads = max(1, ((os.cpu_count() or 2) - 1) // 2)
            runner = self._runners[role] = TaskRunner(self, torch_threads=threads)
            runner.finished.connect(self._task_ended)
            runner.cancelled.connect(self._task_ended)
            runner.failed.connect(self._task_failed)
        return runner

    def _teacher_changed(self) -> None:
        teacher = self.window.teacher
        if self._runners["base"] is not None:
            self._runners["base"].cancel("generate")
        self.slots["base"] = ModelSlot("base", own_twin(teacher), teacher.name, teacher.source)
        self.view.set_base(teacher.name)
        self.view.show_status(f"Base model: {teacher.name}. Add a direction, then drag its slider.")
        self._show_empty_panes()

    def choose_variant(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.view, "Variant model (a Hugging Face folder: config.json "
                                                  "+ safetensors)", str(paths.data_dir() / "runs"))
        if folder:
            self.load_variant(folder)

    def load_variant(self, folder: str) -> Task:
        """Load a variant in the background; its panes appear when it is in."""
        folder = str(folder)
        name = Path(folder).name
        if Path(folder).parent.name == "artifacts":
            name = Path(folder).parent.parent.name  # a run's artifacts/variant: the run's name
        base = self.slots["base"].teacher if self.slots["base"] is not None else None
        self._variant_loading = name
        self.view.set_variant(name, loading=True)
        self.view.show_status(f"Loading the variant {name}…")

        def done(result) -> None:
            teacher, warning = result
            self._variant_loading = ""
            self.slots["variant"] = ModelSlot("variant", teacher, name, str(folder))
            self.view.set_variant(name)
            self._show_empty_panes()
            self.view.show_status(f"Variant: {teacher.name} ({teacher.n_layers} layers, width {teacher.d_model})."
                                  + (f" {warning}" if warning else ""))
            self.variant_changed.emit()
            if self._generated_once:
                self.generate()

        def failed(what: str, hint: str) -> None:
            self._variant_loading = ""
            self.view.set_variant(self.slots["variant"].name if self.slots["variant"] else "")
            self.view.show_error(f"The variant could not be loaded: {what} {hint}".strip())
            self.variant_changed.emit()

        runner = self._runner("variant")
        runner.cancel("generate")
        self._variant_task = runner.submit(Task("load", lambda state: _load_variant(folder, base, state),
                                                title=f"Loading {name}", on_result=done, on_error=failed))
        return self._variant_task

    def clear_variant(self) -> None:
        if self._runners["variant"] is not None:
            self._runners["variant"].cancel()
        self.slots["variant"] = None
        self._variant_loading = ""
        self.view.set_variant("")
        self.variant_changed.emit()

    # ================================================================== directions

    def open_add_dialog(self, kind: str = "feature") -> AddDirectionDialog:
        if self.dialog is None:
            self.dialog = AddDirectionDialog(self.view)
            self.dialog.chosen.connect(lambda source: self.add_direction(source))
            self.dialog.starter_requested.connect(lambda: self.window.features.open_starter())
        self._refresh_dialog()
        self._list_contrasts()
        self.dialog.show_page(kind)
        self.dialog.message.setText("")
        self.dialog.open()
        return self.dialog

    def _refresh_dialog(self) -> None:
        if self.dialog is None:
            return
        d = self.window.features.dictionary
        if d is None:
            loading = self.window.features._loading is not None
            self.dialog.set_dictionary("", "Loading the dictionary…" if loading else
                                       "No dictionary is open (Dictionary menu).", 0, None, offer_starter=not loading)
            return
        if d.fit_error is not None:
            self.dialog.set_dictionary("", f"The open dictionary {d.name} does not fit the teacher: {d.fit_error[0]}",
                                       0, None, offer_starter=not d.starter)
            return
        where = d.hook.name if d.hook is not None else d.sae.cfg.hook_name
        self.dialog.set_dictionary(d.source, f"{d.describe()}. Search its labels or give a feature's index; "
                                   f"the direction is the feature's decoder row at {where}.",
                                   d.sae.d_sae, d.labels)

    def _list_contrasts(self) -> None:
        def run(_state):
            from core.contrast import SUFFIX, contrasts_dir, list_contrasts

            return [(p.name[: -len(SUFFIX)], str(p)) for p in list_contrasts()], str(contrasts_dir())

        task = Task("steer-contrasts", run, on_result=lambda r: self.dialog.set_contrasts(*r) if self.dialog else None)
        task.quiet = True
        self.window.io.submit(task)

    def _feature_name(self, source: dict) -> str:
        d = self.window.features.dictionary
        index = source.get("index")
        label = ""
        if d is not None and d.source == source.get("dictionary"):
            label = d.labels.get(index) if isinstance(index, int) else ""
        return f"#{index} {label}".strip()

    def add_direction(self, source: dict, alpha: float = 0.0, apply_to: Optional[str] = None,
                      name: str = "") -> int:
        """Resolve `source` (core.steering.direction_from_source) in the background and add its row.
        Returns the row's uid; `direction_added(uid)` or `direction_failed(message)` follows."""
        uid = next(self._uids)
        source = dict(source)
        if apply_to is None:  # a crosscoder latent's one row steers the model it is of
            apply_to = ({0: "base", 1: "variant"}.get(source.get("decoder"), "both")
                        if source.get("kind") == "crosscoder" else "both")
        if not name and source.get("kind") == "feature":
            name = self._feature_name(source)
        base = self.slots["base"].teacher if self.slots["base"] is not None else None
        d = self.window.features.dictionary
        if d is not None and d.source not in self._saes:
            self._saes[d.source] = d.sae  # the window's dictionary, already loaded
        saes = self._saes

        def done(direction) -> None:
            self._pending.discard(uid)
            per_role = direction if isinstance(direction, dict) else None
            if per_role is not None:
                direction = per_role["variant"]
            shown = name or direction.name
            entry = self.entries[uid] = Entry(uid, source, direction, shown, float(alpha), apply_to, per_role)
            detail = f"{direction.hook.name} · {KIND_TEXT.get(source.get('kind'), source.get('kind'))}"
            where = direction.source if per_role is None else \
                "; ".join(f"{role}: {d.source}" for role, d in per_role.items())
            self.view.add_row(uid, shown, detail, where, entry.alpha, apply_to)
            self.view.show_status(f"Added {shown}: {where}.")
            self.direction_added.emit(uid)
            self._after_resolution(regenerate=entry.alpha != 0)

        def failed(what: str, hint: str) -> None:
            self._pending.discard(uid)
            message = f"The direction could not be added: {what} {hint}".strip()
            self.view.show_error(message)
            self.direction_failed.emit(message)
            self._after_resolution(regenerate=False)

        self._pending.add(uid)
        task = Task(f"steer-direction-{uid}", lambda _state: _resolve(source, base, saes),
                    title="Adding a steering direction", on_result=done, on_error=failed)
        task.quiet = True  # errors are shown on the tab, not in a box
        self.window.io.submit(task)
        return uid

    def _after_resolution(self, regenerate: bool) -> None:
        if self._pending:
            return
        if self._generate_when_resolved:
            self._generate_when_resolved = False
            self.generate()
        elif regenerate:
            self.debounce.start()

    def remove_direction(self, uid: int) -> None:
        if self.entries.pop(uid, None) is None:
            return
        self.view.remove_row(uid)
        self._restart_soon()

    def _alpha_changed(self, uid: int, alpha: float) -> None:
        entry = self.entries.get(uid)
        if entry is not None:
            entry.alpha = float(alpha)
            self._restart_soon()

    def _apply_changed(self, uid: int, apply_to: str) -> None:
        entry = self.entries.get(uid)
        if entry is not None:
            entry.apply_to = apply_to
            self._restart_soon()

    def _restart_soon(self) -> None:
        """A slider moved: stop the generation it makes stale now, start the new one once the
        slider has rested (DEBOUNCE_MS)."""
        for runner in self._runners.values():
            if runner is not None:
                runner.cancel("generate")
        for model in MODELS:
            pane = self.view.panes[(model, "steered")]
            if pane.isVisibleTo(self.view):
                pane.set_status("waiting for the slider to rest…")
        self.debounce.start()

    # ================================================================== generation

    def generate(self) -> None:
        """Generate (or continue, or show from memory) every pane's continuation."""
        self.debounce.stop()
        prompt, max_new, temperature, seed = self.view.settings()
        if self._pending:  # directions still being resolved: generate once they are in
            self._generate_when_resolved = True
            self.view.show_status("Waiting for the directions to load…")
            return
        if not prompt.strip():
            self.view.show_error("Type a prompt first.")
            return
        if self.slots["base"] is None:
            self.view.show_error("The teacher is not loaded yet (Model menu).")
            return
        self._generated_once = True
        seed_used = int(seed) if temperature > 0 else None
        settings = (prompt, int(max_new), float(temperature), seed_used)
        bound = {id(p.stream) for p in self.view.panes.values() if p.stream is not None}
        for role in MODELS:
            slot = self.slots[role]
            if slot is None:
                continue
            unsteered = slot.stream(("unsteered",) + settings, bound)
            terms = [(e.direction_for(role), e.alpha) for e in self._ordered() if e.steers(role)]
            steered, note = None, ""
            if not self.entries:
                note = "Add a direction to see the steered continuation."
            elif not terms:
                steered, note = unsteered, f"No direction steers the {role} (see each direction's 'applies to')."
            else:
                key = ("steered",) + settings + tuple((e.uid, e.alpha) for e in self._ordered() if e.steers(role))
                steered = slot.stream(key, bound)
            self._bind(role, "unsteered", unsteered, prompt)
            self._bind(role, "steered", steered, prompt, note)
            self.view.panes[(role, "unsteered")].set_subtitle("no steering")
            self.view.panes[(role, "steered")].set_subtitle(_strengths_text(
                [e for e in self._ordered() if e.steers(role)], role))
            jobs = []
            make = _maker(slot.teacher, prompt, [], max_new, temperature, seed_used)
            if not unsteered.done:
                jobs.append((unsteered, make))
            if steered is not None and steered is not unsteered and not steered.done:
                jobs.append((steered, _maker(slot.teacher, prompt, terms, max_new, temperature, seed_used)))
            runner = self._runner(role)
            if jobs:
                relay = self._relay
                task = Task("generate", lambda state, jobs=jobs: run_streams(jobs, relay, state),
                            title=f"Generating ({role})")
                task.streams = [j[0] for j in jobs]
                self.tasks[role] = runner.submit(task)
            else:
                runner.cancel("generate")  # everything shown is complete: nothing to generate
        self._refresh_statuses()
        self.view.set_busy(self._busy())
        if not self._busy():
            self.generated.emit()

    def _ordered(self) -> list[Entry]:
        return [self.entries[uid] for uid in sorted(self.entries)]

    def cancel(self) -> None:
        self.debounce.stop()
        for runner in self._runners.values():
            if runner is not None:
                runner.cancel("generate")

    def cancel_if_shown(self) -> None:
        """Esc (the window's Cancel action): stop generating while this tab is the one shown."""
        if self.window.tabs.currentWidget() is self.view:
            self.cancel()

    def _busy(self) -> bool:
        return any(t is not None and t.outcome is None for t in self.tasks.values())

    def _bind(self, role: str, kind: str, stream: Optional[Stream], prompt: str, note: str = "") -> None:
        pane = self.view.panes[(role, kind)]
        pane.note = note
        if stream is not None and pane.stream is stream:
            return  # already showing it: the unsteered pane stays as it is when a slider moves
        pane.stream = stream
        if stream is None:
            pane.reset("", note)
            return
        pane.reset(prompt)
        pane.append(list(stream.pieces))

    def _show_empty_panes(self) -> None:
        for (role, kind), pane in self.view.panes.items():
            pane.stream = None
            pane.note = ""
            pane.reset("", "Press Generate (Ctrl+Return)." if kind == "unsteered" else
                       "Add a direction and drag its slider.")

    def _on_piece(self, stream: Stream) -> None:
        for pane in self.view.panes.values():
            if pane.stream is stream:
                pane.append(stream.pieces[pane.count:])
        self._refresh_statuses()

    def _on_ended(self, stream: Stream) -> None:
        self._on_piece(stream)

    def _task_ended(self, task: Task, *_result) -> None:
        self._refresh_statuses()
        self.view.set_busy(self._busy())
        if task.key == "generate" and not self._busy() and not self.debounce.isActive():
            self.generated.emit()  # nothing running, nothing about to start

    def _task_failed(self, task: Task, what: str, hint: str) -> None:
        if task.key == "generate":
            self.view.show_error(f"Generation failed: {what} {hint}".strip())
        self._task_ended(task)

    def _refresh_statuses(self) -> None:
        running = {id(s) for t in self.tasks.values() if t is not None and t.outcome is None
                   for s in getattr(t, "streams", [])}
        for role in MODELS:  # colour where each steered text departs from its unsteered one
            u, s = self.view.panes[(role, "unsteered")].stream, self.view.panes[(role, "steered")].stream
            self.view.panes[(role, "steered")].mark_departure(departure(u, s))
        for (role, kind), pane in self.view.panes.items():
            s = pane.stream
            if s is None:
                continue
            text = s.describe(id(s) in running)
            note = getattr(pane, "note", "")
            if kind == "steered" and s.norms and not s.error:
                text += " · strength 1 = " + ", ".join(f"{n:,.0f} at {h}" for h, n in sorted(s.norms.items()))
            pane.set_status(f"{note} {text}".strip() if note else text, error=bool(s.error))

    # ================================================================== presets

    def preset_data(self) -> dict:
        prompt, max_new, temperature, seed = self.view.settings()
        base = self.slots["base"]
        variant = self.slots["variant"]
        return {"prompt": prompt, "base": base.source if base is not None else "bundled",
                "variant": variant.source if variant is not None else "", "max_new_tokens": int(max_new),
                "temperature": float(temperature), "seed": int(seed),
                "directions": [{"source": dict(e.source), "alpha": e.alpha, "name": e.name, "apply_to": e.apply_to}
                               for e in self._ordered()]}

    def _presets_dir(self) -> Path:
        return paths.data_dir() / "steering-presets"

    def save_preset_dialog(self) -> None:
        folder = self._presets_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getSaveFileName(self.view, "Save steering preset", str(folder / "preset.json"),
                                              "Steering preset (*.json)")
        if path:
            self.save_preset(path)

    def save_preset(self, path: str) -> Task:
        data = self.preset_data()

        def run(_state):
            from core.steering import PresetDirection, SteeringPreset

            preset = SteeringPreset(data["prompt"], [PresetDirection(**d) for d in data["directions"]],
                                    data["base"], data["variant"], data["max_new_tokens"], data["temperature"],
                                    data["seed"])
            return str(preset.save(path))

        def done(written: str) -> None:
            self.view.show_status(f"Saved the preset to {written}.")
            self.preset_saved.emit(written)

        def failed(what: str, hint: str) -> None:
            self.view.show_error(f"The preset could not be saved: {what} {hint}".strip())
            self.preset_failed.emit(what)

        task = Task("steer-preset", run, on_result=done, on_error=failed)
        task.quiet = True
        return self.window.io.submit(task)

    def load_preset_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.view, "Load steering preset", str(self._presets_dir()),
                                              "Steering preset (*.json);;All files (*)")
        if path:
            self.load_preset(path)

    def load_preset(self, path: str) -> Task:
        def run(_state):
            from core.steering import SteeringPreset

            return SteeringPreset.load(path)

        def failed(what: str, hint: str) -> None:
            message = f"{what} {hint}".strip()
            self.view.show_error(message)
            from gui.dialogs import show_error_box

            self.error_box = show_error_box(self.view, what, hint)
            self.preset_failed.emit(message)

        task = Task("steer-preset", run, on_result=self.apply_preset, on_error=failed)
        task.quiet = True
        return self.window.io.submit(task)

    def apply_preset(self, preset) -> None:
        """Replace the tab's settings by a preset's (core.steering.SteeringPreset)."""
        self.cancel()
        for uid in list(self.entries):
            self.entries.pop(uid)
            self.view.remove_row(uid)
        self.view.set_settings(preset.prompt, preset.max_new_tokens, preset.temperature, preset.seed)
        notes = []
        base = self.slots["base"]
        if base is not None and preset.base and preset.base != base.source:
            notes.append(f"The preset was made with the base {preset.base}; the open teacher is {base.source} "
                         "(Model menu to load another).")
        variant = self.slots["variant"]
        if preset.variant and (variant is None or variant.source != preset.variant):
            self.load_variant(preset.variant)
        elif not preset.variant and variant is not None:
            self.clear_variant()
        for d in preset.directions:
            self.add_direction(d.source, d.alpha, d.apply_to, d.name)
        if preset.directions:
            self._generate_when_resolved = True  # once every direction is in (or failed)
        else:
            self.generate()
        self.view.show_status(" ".join(["Loaded the preset."] + notes))
        self.preset_loaded.emit()

    # ================================================================== shutdown

    def shutdown(self) -> None:
        self.debounce.stop()
        if self.dialog is not None:
            self.dialog.close()
        for runner in self._runners.values():
            if runner is not None and not runner.shutdown(timeout_ms=5_000):
                runner._thread.wait()

    def threads_finished(self) -> bool:
        return all(r is None or r.is_finished() for r in self._runners.values())


__all__ = ["SteeringSession", "Stream", "run_streams", "KINDS"]
