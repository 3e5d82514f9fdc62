"""Take the screenshots a person looks at: `python -m gui.screenshot OUTDIR [--model bundled]`.

Runs the real app (under Xvfb: DISPLAY=:99 QT_QPA_PLATFORM=xcb; offscreen works too) with the
demo corpus and saves:
  loading.png   the window while the teacher loads,
  inspect.png   a document's tokens coloured by residual norm, with its nearest neighbours and
                its feature bars,
  features.png  the same document with a feature selected: its bar highlighted, the tokens
                coloured by the feature's activation,
  features-compare.png  the document against a labeled class (paired bars, by difference),
  feature-bars-export.png  the bars as exported (PNG at 2x),
  dashboard.png the selected feature's dashboard (label, histogram, contexts, logit effects,
                nearest features),
  search.png    Search Features by token (' because'),
  long.png      a longer pasted letter (wrapping, newlines, scrolling),
  problems.png  after dropping a folder with broken files onto the window: the Problems dock,
                while the grown corpus is extracted (progress bar and Cancel in the status bar),
  paste.png     the Paste Text dialog,
  wizard-*.png  the training wizard's four pages (data, method, settings, measured cost),
  training.png  the Training tab with live curves of a real TopK run on layer 6 (then cancelled).
  contrast.png  the Contrast tab: machine vs human on the provenance demo set (`--only-contrast`;
                with `--student DIR` also student-bars.png, teacher and student bars side by side,
                contrast-head.png, the student's contrast with a fine-tuned head,
                agreement.png, the Agreement tab, agreement-worst.png, its least agreeing
                provenance documents, and student-worst.png, the least agreeing one opened in
                Inspect beside the student's bars),
  steering.png  the Steering tab: a starter-dictionary feature (#1021, food) at strength 0.3 and a
                second at 0, steered beside unsteered (`--only-steering`; with `--variant DIR` the
                variant's continuations below the base's), and steering-add.png, the Add Direction
                dialog searching the labels for 'food',
  crosscoder.png  the Crosscoder tab: relative-norm and cosine histograms, the latent lists after
                Latent Scaling, and crosscoder-dashboard.png, a variant-only latent's dashboard
                (`--only-crosscoder`; `--crosscoder DIR` names the folder, else the newest finished
                crosscoder run's artifacts/crosscoder, else a small crosscoder trained here on
                synthetic activations at the teacher's width; `--crosscoder-analyses` also takes
                crosscoder-reasoning.png, crosscoder-geometry.png and crosscoder-ablation.png),
`--only-training` skips the inspect shots; `--only-features` takes loading, inspect and the
feature shots. `--dictionary DIR` uses that dictionary instead of the starter one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _wait(app, condition, timeout_s: float) -> bool:
    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    return bool(condition())


def _wait_calmly(condition, timeout_s: float) -> bool:
    """`_wait` without spinning: the event loop sleeps between events, as in the running app. (A
    spinning wait holds the GIL against the worker threads: generation looked three times slower.)"""
    from PySide6.QtCore import QEventLoop, QTimer

    end = time.monotonic() + timeout_s
    loop = QEventLoop()
    timer = QTimer(interval=100)
    timer.timeout.connect(lambda: loop.quit() if condition() or time.monotonic() > end else None)
    timer.start()
    loop.exec()
    timer.stop()
    return bool(condition())


def _settle(app, seconds: float = 0.4) -> None:
    _wait(app, lambda: False, seconds)


def _bad_folder(root: Path) -> Path:
    """A folder of mixed input: two good documents and several broken files."""
    folder = root / "my-notes"
    (folder / "drafts").mkdir(parents=True)
    (folder / "intro.txt").write_text("Interpretability starts with looking at the data.\n", "utf-8")
    (folder / "drafts" / "idea.md").write_text("# Idea\n\nDistil the teacher, then read the student.", "utf-8")
    (folder / "photo.txt").write_bytes(bytes(range(256)) * 16)
    (folder / "empty.md").write_text("", "utf-8")
    (folder / "rows.jsonl").write_text('{"text": "fine row"}\n{"text": 3}\nnot json\n{"body": "x"}\n', "utf-8")
    (folder / "table.csv").write_text('id,text\n1,"ok, quoted"\n2,too,many,cells\n', "utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me, na\xefve\n".encode("latin-1"))
    (folder / "slides.pdf").write_bytes(b"%PDF-1.4\n")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--document", default="science-0017", help="id of the document to inspect")
    parser.add_argument("--only-training", action="store_true", help="only the wizard and training shots")
    parser.add_argument("--only-features", action="store_true", help="only the inspect and feature shots")
    parser.add_argument("--dictionary", default="starter", help="dictionary folder (default: the starter)")
    parser.add_argument("--only-contrast", action="store_true",
                        help="only the contrast shots (and the student side by side with --student)")
    parser.add_argument("--student", default=None, help="a student folder for student-bars.png")
    parser.add_argument("--only-steering", action="store_true", help="only the Steering tab (steering.png)")
    parser.add_argument("--variant", default=None, help="a variant model folder for steering.png")
    parser.add_argument("--only-crosscoder", action="store_true", help="only the Crosscoder tab (crosscoder*.png)")
    parser.add_argument("--crosscoder", default=None, help="a crosscoder folder for crosscoder.png; with "
                        "--only-steering --variant, also steering-latent.png (its strongest variant-only latent)")
    parser.add_argument("--crosscoder-analyses", action="store_true",
                        help="with --only-crosscoder: also run and shoot reasoning tags, geometry and ablation")
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    from gui.app import make_app
    from gui.main_window import MainWindow

    app = make_app()
    window = MainWindow(layer=args.layer, dictionary=None if args.only_crosscoder else args.dictionary)
    window.resize(1280, 800)
    window.show()
    window.load_teacher(args.model)
    if not (args.only_steering or args.only_crosscoder):  # no corpus there: its extraction and feature index would share the cores
        window.open_demo()
        _wait(app, lambda: len(window.entries) > 0, 30)
    _settle(app, 1.0)
    window.grab().save(str(out / "loading.png"))
    print("loading.png:", window.status.label.text())

    if not _wait(app, lambda: window.teacher is not None, 900):
        print("the teacher did not load:", window.status.label.text())
        window.close()
        return 1
    if args.only_training:
        code = training_shots(app, window, out, args.layer)
        window.close()
        return code
    if args.only_steering:
        code = steering_shots(app, window, out, args.variant, args.crosscoder)
        window.close()
        return code
    if args.only_crosscoder:
        code = crosscoder_shots(app, window, out, args.crosscoder, args.layer, args.crosscoder_analyses)
        window.close()
        return code
    ids = [e.doc.id for e in window.entries]
    row = ids.index(args.document) if args.document in ids else 0
    window.documents.select_row(row)
    _wait(app, lambda: window.layer in window._vectors and window.neighbours.model.rowCount() > 0
          and bool(window.token_panel.tokens), 900)
    _wait(app, lambda: bool(window.features.bars.rows) or window.features.dictionary is None, 60)
    _settle(app)
    window.grab().save(str(out / "inspect.png"))
    print("inspect.png:", window.status.label.text())
    if window.features.ready():
        feature_shots(app, window, out)
    else:
        print("no dictionary for the feature shots:", window.features.bars.stack.message)
    if args.only_features:
        window.close()
        return 0
    if args.only_contrast:
        code = contrast_shots(app, window, out, args.student)
        window.close()
        return code

    dialog = window.paste_dialog_open()
    letter = (Path(__file__).resolve().parent.parent / "resources" / "demo" / "sample.txt")
    dialog.text.setPlainText(letter.read_text("utf-8") if letter.exists() else "Dear reader,\n\nHello.")
    dialog.label.setText("letter")
    _settle(app)
    dialog.grab().save(str(out / "paste.png"))
    dialog.accept()
    _wait(app, lambda: bool(window.token_panel.tokens) and window.current_entry().corpus_index is None
          and window.neighbours.model.rowCount() > 0, 120)
    _settle(app)
    window.grab().save(str(out / "long.png"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = _bad_folder(Path(tmp))
        n = len(window.corpus)
        window.open_paths([folder], add=True)  # what dropping the folder on the window does
        _wait(app, lambda: len(window.corpus) > n, 60)
        _settle(app, 3.0)  # the extraction of the grown corpus is running: progress bar visible
        window.grab().save(str(out / "problems.png"))
        print("problems.png:", window.status.problems_button.text())
    code = training_shots(app, window, out, args.layer)
    window.close()
    return code


def contrast_shots(app, window, out: Path, student: str | None) -> int:
    """contrast.png: machine vs human on the provenance demo set (teacher vectors), a machine
    text classified; student-bars.png: a document's bars beside a student's (with --student)."""
    if student:
        window.open_student(student)
        _wait(app, lambda: window.student is not None, 60)
        _wait(app, lambda: window.features.bars.other is not None, 120)
        _settle(app)
        window.grab().save(str(out / "student-bars.png"))
        print("student-bars.png:", window.features.bars.note.text())
    window.open_demo("demo-provenance")
    _wait(app, lambda: window.corpus.name.startswith("provenance"), 60)
    window.tabs.setCurrentIndex(2)
    view = window.contrast.view
    view.space.setCurrentIndex(0)
    view.positive.setCurrentIndex(max(0, view.positive.findData("machine")))
    view.negative.setCurrentIndex(max(0, view.negative.findData("human")))
    view.compute_button.click()
    if not _wait(app, lambda: view.result is not None, 900):
        print("the contrast did not finish:", view.summary.text())
        return 1
    machine = next(d.text for d in window.corpus.documents if d.label == "machine")
    view.text.setPlainText(machine)
    view.classify_button.click()
    _wait(app, lambda: "score" in view.verdict.text(), 60)
    _settle(app)
    window.grab().save(str(out / "contrast.png"))
    print("contrast.png:", view.summary.text())
    return student_shots(app, window, out) if student else 0


def steering_shots(app, window, out: Path, variant: str | None, crosscoder: str | None = None) -> int:
    """steering.png: a starter-dictionary feature (#1021, ' hamburger' · ' food') at 0.3 and another
    (#285, ' computer') at 0, on the prompt the strengths were measured with; greedy, 40 tokens."""
    window.act_show_steering.trigger()
    session, view = window.steering, window.steering.view
    if not _wait(app, lambda: window.features.dictionary is not None, 60):
        print("no dictionary for the steering shot")
        return 1
    view.set_settings("The best thing about my weekend was", 40, 0.0, 0)
    if variant:
        session.load_variant(variant)
        if not _wait(app, lambda: session.slots["variant"] is not None, 600):
            print("the variant did not load:", view.status.text())
            return 1
    dialog = session.open_add_dialog("feature")  # as a user adds the first one: search the labels
    dialog.search.setText("food")
    _settle(app)
    dialog.grab().save(str(out / "steering-add.png"))
    print("steering-add.png:", dialog.results.count(), "features whose label has 'food'")
    dialog.feature_index.setValue(1021)
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    _wait(app, lambda: len(view.rows) == 1 and not session._pending, 60)
    next(iter(view.rows.values())).set_alpha(0.3, emit=True)
    session.add_direction({"kind": "feature", "dictionary": window.features.dictionary.source, "index": 285}, 0.0)
    _wait(app, lambda: len(view.rows) == 2 and not session._pending, 60)
    if not _generate_and_wait(session, view):
        print("the generation did not finish:", [p.status.text() for p in view.panes.values()])
        return 1
    _settle(app)
    window.grab().save(str(out / "steering.png"))
    _print_panes(view, "steering.png")
    if variant and crosscoder:
        return _steer_latent_shot(app, window, out, crosscoder)
    return 0


def _generate_and_wait(session, view) -> bool:
    session.generate()
    panes = [p for p in view.panes.values() if p.isVisibleTo(view)]
    return _wait_calmly(lambda: not session._busy() and all(p.stream is not None and p.stream.done
                                                            for p in panes), 600)


def _print_panes(view, shot: str) -> None:
    for (model, kind), pane in view.panes.items():
        if pane.isVisibleTo(view):
            print(f"{shot} {model} {kind}: {pane.status.text()}\n  {pane.continuation!r}")


def _steer_latent_shot(app, window, out: Path, crosscoder: str, alpha: float = 0.6) -> int:
    """steering-latent.png: the features' sliders at 0, and the crosscoder's variant-only latent
    with the longest variant decoder row steering each model with its own row ("Steer with this
    latent"), so the variant's steered text moves and the base's barely."""
    from core.crosscoder import Crosscoder, relative_norms

    session, view = window.steering, window.steering.view
    cc = Crosscoder.load(crosscoder)
    rel = relative_norms(cc)
    norms = cc.W_dec.detach()[:, 1].float().norm(dim=-1)
    candidates = (rel > 0.9).nonzero().flatten()
    latent = int(candidates[norms[candidates].argmax()])
    for row in view.rows.values():
        row.set_alpha(0.0, emit=True)
    session.add_direction({"kind": "crosscoder", "folder": crosscoder, "latent": latent, "decoder": "own"}, alpha)
    if not _wait(app, lambda: len(view.rows) == 3 and not session._pending, 120):
        print("the latent was not added:", view.status.text())
        return 1
    if not _generate_and_wait(session, view):
        print("the generation did not finish")
        return 1
    _settle(app)
    window.grab().save(str(out / "steering-latent.png"))
    print(f"steering-latent.png: latent {latent}, relative norm {float(rel[latent]):.3f}, strength {alpha}")
    _print_panes(view, "steering-latent.png")
    return 0


def _newest_crosscoder() -> str | None:
    """The artifacts/crosscoder folder of the newest finished crosscoder run, if any."""
    from core.jobs.runs import list_runs

    for run in list_runs():
        folder = run.artifacts_dir / "crosscoder"
        if run.status().get("state") == "done" and (folder / "cfg.json").is_file():
            return str(folder)
    return None


def _synthetic_crosscoder(teacher, layer: int, folder: Path) -> Path:
    """A BatchTopK crosscoder at the teacher's width, trained in seconds on planted synthetic
    activations (shared, turned, base-only and variant-only features), its input scales set from
    the teacher's real residuals at resid_post.LAYER, both sources 'bundled': a stand-in that
    gives the tab content until a real crosscoder run exists (its latents mean nothing in text)."""
    import torch

    from core.activations import pad_batch
    from core.crosscoder import Crosscoder, CrosscoderConfig, CrosscoderTrainConfig, CrosscoderTrainer
    from core.crosscoder.synthetic import paired_batches, planted_pair
    from core.dictionaries.base import estimate_input_scale
    from core.documents import load_demo
    from core.models import HookPoint, capture
    from core.steering import non_bos_mask

    d = teacher.d_model
    pair = planted_pair(d, n_shared=160, n_rotated=24, n_base_only=12, n_variant_only=20, n_weak_base=8, seed=0)
    cc = Crosscoder(CrosscoderConfig(d_in=d, d_latent=512, architecture="batchtopk", k=8, dead_after_tokens=50_000,
                                     hook=f"resid_post.{layer}", model_sources=["bundled", "bundled"]), seed=0)
    trainer = CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=400, lr=3e-3, warmup_steps=30))
    for x in paired_batches(pair, 256, 400, seed=1, p_active=8 / 224):
        trainer.train_step(x)
    texts = [doc.text for doc in load_demo().documents[:24]]
    ids, mask = pad_batch(teacher.tokenize(texts, 64), teacher.pad_id)
    point = HookPoint("resid_post", layer)
    with torch.no_grad():
        acts = capture(teacher, ids, mask, [point])[point][non_bos_mask(ids, mask, teacher.bos_id)].float()
    scale = estimate_input_scale(acts)
    cc.cfg.input_scale = [scale, scale]
    return cc.eval().save(folder)


def crosscoder_shots(app, window, out: Path, folder: str | None, layer: int, analyses: bool) -> int:
    """crosscoder.png: the tab after Latent Scaling (histograms, lists with nu); then the top
    variant-only latent's dashboard, crosscoder-dashboard.png (timed: the first reads the documents
    through both models, the next one is computed from them)."""
    session, view = window.crosscoder, window.crosscoder.view
    tmp = None
    folder = folder or _newest_crosscoder()
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        start = time.monotonic()
        folder = str(_synthetic_crosscoder(window.teacher, layer, Path(tmp.name) / "synthetic-demo-crosscoder"))
        print(f"no crosscoder run yet: trained a synthetic stand-in in {time.monotonic() - start:.1f} s")
    window.act_show_crosscoder.trigger()
    try:
        session.open(folder)
        if not _wait(app, lambda: session.crosscoder is not None or bool(session.error), 120):
            print("the crosscoder did not open:", view.status.text())
            return 1
        if session.crosscoder is None:
            print("the crosscoder did not open:", session.error)
            return 1
        start = time.monotonic()
        done = []
        session.analysis_done.connect(done.append)
        if session.run_analysis("scaling") is None:  # nothing to test: no exclusive latent
            print("no Latent Scaling:", view.status.text())
        elif not _wait_calmly(lambda: "scaling" in done or (not session.busy() and bool(session.error)), 900):
            print("Latent Scaling did not finish:", view.status.text())
        print(f"Latent Scaling: {time.monotonic() - start:.1f} s; {view.status.text()[:300]}")
        view.right.setCurrentIndex(0)
        view.lists.tabs.setCurrentIndex(0)
        first = view.lists.lists["variant-only"].latents()
        if first:
            view.lists.lists["variant-only"].select_latent(first[0])
        _settle(app)
        window.grab().save(str(out / "crosscoder.png"))
        print("crosscoder.png:", view.summary.text()[:200])
        shown = []
        session.dashboard_shown.connect(shown.append)
        if not first:  # no variant-only latent: the shared ones that lean most to the variant
            rows = sorted(view.lists.lists["shared"].model_.rows, key=lambda r: -(r["rel"] or 0.0))
            first = [r["latent"] for r in rows]
            if first:
                view.select_latent(first[0])
        latents = first[:2]
        for n, j in enumerate(latents):
            start = time.monotonic()
            session.open_dashboard(j)
            if not _wait_calmly(lambda: j in shown or (not session.busy() and bool(session.error)), 900):
                print("the dashboard did not finish:", view.dashboard.stats.text())
                return 1
            print(f"dashboard of latent {j} ({'reads the documents' if n == 0 else 'from the read documents'}): "
                  f"{time.monotonic() - start:.1f} s")
        if latents:
            session.open_dashboard(latents[0])
            _wait_calmly(lambda: shown.count(latents[0]) >= 2, 120)
        _settle(app)
        window.grab().save(str(out / "crosscoder-dashboard.png"))
        print("crosscoder-dashboard.png:", view.dashboard.stats.text()[:300])
        if analyses:
            for kind in ("reasoning", "geometry", "ablation"):
                start = time.monotonic()
                if session.run_analysis(kind) is None:
                    print(f"no {kind}:", view.status.text())
                    continue
                if not _wait_calmly(lambda: kind in done or (not session.busy() and bool(session.error)), 1800):
                    print(f"{kind} did not finish:", view.status.text())
                    continue
                _settle(app)
                window.grab().save(str(out / f"crosscoder-{kind}.png"))
                print(f"crosscoder-{kind}.png: {time.monotonic() - start:.1f} s; {view.status.text()[:300]}")
        return 0
    finally:
        if tmp is not None:
            session.cancel()
            tmp.cleanup()


def student_shots(app, window, out: Path) -> int:
    """contrast-head.png: the contrast on the student's vectors with a fine-tuned head's ROC;
    agreement.png: the Agreement tab (evaluated now if the student folder has no agreement.json)."""
    view = window.contrast.view
    view.space.setCurrentIndex(max(0, view.space.findData("student")))
    view.compute_button.click()
    _wait(app, lambda: view.result is not None and view.result.space.startswith("student"), 300)
    view.head_button.click()
    if not _wait(app, lambda: bool(view.head_note), 900):
        print("the head did not finish:", view.summary.text())
        return 1
    _settle(app)
    window.grab().save(str(out / "contrast-head.png"))
    print("contrast-head.png:", view.summary.text())
    window.tabs.setCurrentIndex(3)
    agreement = window.agreement.view
    if agreement.data is None:
        agreement.evaluate_button.click()
        if not _wait(app, lambda: agreement.data is not None, 900):
            print("the agreement did not finish:", agreement.summary.text())
            return 1
    _settle(app)
    window.grab().save(str(out / "agreement.png"))
    print("agreement.png:", agreement.summary.text())
    agreement.left_tabs.setCurrentIndex(1)
    agreement.worst_set.setCurrentIndex(max(0, agreement.worst_set.findData("contrast")))
    _wait(app, lambda: bool(agreement.documents), 60)
    _settle(app)
    window.grab().save(str(out / "agreement-worst.png"))
    item = agreement.worst.item(0, 0)
    worst = item.text() if item is not None else ""
    print("agreement-worst.png:", worst or "no documents listed")
    if not worst:
        return 1
    agreement.worst.cellDoubleClicked.emit(0, 0)
    bars = window.features.bars
    _wait(app, lambda: bars.header.text().startswith(f"Features of {worst} vs") and bars.other is not None, 300)
    _settle(app)
    window.grab().save(str(out / "student-worst.png"))
    print("student-worst.png:", bars.header.text(), "|", bars.note.text())
    return 0


def feature_shots(app, window, out: Path) -> None:
    """Bars with a feature selected (tokens coloured), compare with a class, the exported
    figure, the feature's dashboard and a search by token. Waits for the feature index."""
    session, bars = window.features, window.features.bars
    if not _wait(app, lambda: session.index() is not None, 900):
        print("the feature index was not built:", window.status.label.text())
        return
    entry = window.current_entry()
    _wait(app, lambda: bool(bars.rows) and session.features_of(entry) is not None, 60)
    # The shown feature that is most active on one of the document's tokens, so the tokens light up.
    peak = session.features_of(entry).peak
    feature = max(bars.rows, key=lambda r: float(peak[r.feature])).feature
    session.select_feature(feature)
    _wait(app, lambda: window.token_panel.feature == feature, 30)
    _settle(app)
    window.grab().save(str(out / "features.png"))
    print("features.png: feature", feature, repr(session.dictionary.labels.get(feature)))
    session.export_bars(str(out / "feature-bars-export.png"))

    session.open_dashboard(feature)
    _wait(app, lambda: session.dashboard.data is not None and session.dashboard.feature == feature, 120)
    _settle(app, 0.8)
    session.dock.grab().save(str(out / "dashboard.png"))
    print("dashboard.png:", session.dashboard.stats.text().splitlines()[0])
    session.dock.hide()

    label = entry.doc.label
    others = [i for i in range(bars.compare_box.count()) if bars.compare_box.itemData(i).startswith("class:")
              and bars.compare_box.itemData(i) != f"class:{label}"]
    if others:
        bars.set_compare("class", bars.compare_box.itemData(others[0]).partition(":")[2])
        _wait(app, lambda: bool(bars.rows) and bars.rows[0].other is not None, 120)
        _settle(app)
        window.grab().save(str(out / "features-compare.png"))
        print("features-compare.png:", bars.header.text())
        bars.set_compare("none")

    search = session.open_search()
    search.move(window.mapToGlobal(window.rect().center()) - search.rect().center())
    search.search("' because'", "token")
    _wait(app, lambda: "occurrences" in search.status.text() or "not in the corpus" in search.status.text(), 60)
    _settle(app)
    search.grab().save(str(out / "search.png"))
    print("search.png:", search.status.text())
    search.hide()
    session.select_feature(-1)


def training_shots(app, window, out: Path, layer: int) -> int:
    from core.jobs import JobSpec

    spec = JobSpec()
    spec.data.hook = f"resid_post.{layer}"
    spec.run.name = "topk-demo-l6"
    spec.train.total_tokens = 150_000
    wizard = window.new_training_run(spec)
    for name in ("data", "method", "settings"):
        _settle(app)
        wizard.grab().save(str(out / f"wizard-{name}.png"))
        wizard.next()
    _wait(app, lambda: wizard.cost_page.estimate is not None or "error" in wizard.cost_page.status.text(), 300)
    _settle(app)
    wizard.grab().save(str(out / "wizard-cost.png"))
    wizard.accept()
    view = window.training_view
    _wait(app, lambda: window.run_bridge.active_run_id() is not None, 30)
    run_id = window.run_bridge.active_run_id()
    if not _wait(app, lambda: view.curves.point_count(run_id, "loss") >= 15, 900):
        print("no curve points appeared")
        return 1
    _settle(app, 1.0)
    window.grab().save(str(out / "training.png"))
    print("training.png:", view.row(run_id).state, view.curves.point_count(run_id, "loss"), "points")
    view.pause()
    _wait(app, lambda: view.row(run_id).state == "paused", 10)
    _settle(app, 1.5)
    window.grab().save(str(out / "training-paused.png"))
    view.cancel()
    _wait(app, lambda: window.run_bridge.active_run_id() is None, 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
