"""The Crosscoder tab (pytest-qt, offscreen) on a tiny crosscoder trained on synthetic activations
with planted base-only, variant-only and shared features, read against two tiny random models
(the tiny teacher and a copy with one block perturbed, saved as folders the tab loads itself).

The histograms show exactly core's counts; the variant-only list holds the planted variant-only
latent; its dashboard (and the busiest latent's) shows core's contexts and activations; the
analyses show core's numbers; a cancelled analysis leaves the tab usable; damaged folders and
moved models give clear messages; Export writes every plot and table; no worker thread or timer
is left running."""

import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import torch  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402

from core.crosscoder import (Crosscoder, CrosscoderConfig, CrosscoderTrainConfig, CrosscoderTrainer,  # noqa: E402
                             latent_sets, norm_report)
from core.crosscoder.synthetic import paired_batches, planted_pair  # noqa: E402
from tests.test_feature_view import TIMEOUT_MS  # noqa: E402

torch.set_num_threads(1)

HOOK = "resid_post.2"
TEXTS = ["the quick brown fox jumps over the lazy dog.", "a stitch in time saves nine.",
         "all that glitters is not gold.", "love is patient, love is kind.", "eat your vegetables.",
         "computers are fast but programmers are slow.", "science is organised knowledge."]
DOCS = [(f"doc{i}", t) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def variant_dir(tiny_model_dir, tmp_path_factory):
    """The tiny teacher with block 1 perturbed, saved as its own Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("variant") / "tiny-variant"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.model.layers[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def planted(tiny_model_dir, variant_dir, tmp_path_factory):
    """(folder, crosscoder, pair, {kind: [latent matched to each planted feature]}): BatchTopK,
    64 latents over d_in 32, trained on planted synthetic activations (seconds), then given the
    tiny models' hook and folders as its sources and saved."""
    pair = planted_pair(32, n_shared=12, n_rotated=2, n_base_only=3, n_variant_only=3, seed=0)
    cc = Crosscoder(CrosscoderConfig(d_in=32, d_latent=64, architecture="batchtopk", k=2,
                                     dead_after_tokens=20_000), seed=0)
    trainer = CrosscoderTrainer(cc, CrosscoderTrainConfig(total_steps=600, lr=3e-3, warmup_steps=50))
    for x in paired_batches(pair, 256, 600, seed=1, p_active=0.1):
        trainer.train_step(x)
    cc.eval()
    cc.cfg.hook = HOOK
    cc.cfg.model_sources = [str(tiny_model_dir), str(variant_dir)]
    folder = cc.save(tmp_path_factory.mktemp("cc") / "planted")
    W = torch.nn.functional.normalize(cc.W_dec.detach().sum(1), dim=-1)
    matched = {}
    for kind in ("variant-only", "base-only"):
        for j in pair.indices(kind):
            d = pair.directions[j].sum(0)
            matched.setdefault(kind, []).append(int((W @ (d / d.norm())).argmax()))
    return folder, Crosscoder.load(folder), pair, matched


@pytest.fixture
def tab(qtbot):
    """A standalone Crosscoder tab (no main window); afterwards its worker must have ended and
    no timer of the tab be running."""
    from gui.crosscoder_session import CrosscoderSession

    session = CrosscoderSession()
    qtbot.addWidget(session.view)
    session.view.resize(1280, 760)
    session.view.show()
    yield session
    session.view.close()
    session.shutdown()
    assert session.threads_finished(), "the crosscoder worker thread is still running"
    running = [t for t in session.view.findChildren(QTimer) + session.findChildren(QTimer) if t.isActive()]
    assert not running, f"timers left running: {running}"


def open_planted(qtbot, session, planted):
    with qtbot.waitSignal(session.opened, timeout=TIMEOUT_MS):
        session.open(planted[0])
    session.set_documents(DOCS, "the test texts")
    return session.view


def models(tiny_model_dir, variant_dir):
    from core.models import load_teacher

    return [load_teacher(tiny_model_dir, device="cpu"), load_teacher(variant_dir, device="cpu")]


def test_histograms_and_lists_show_what_core_computes(qtbot, tab, planted):
    view = open_planted(qtbot, tab, planted)
    cc, matched = planted[1], planted[3]
    rep = norm_report(cc)
    assert view.rel_hist.counts == rep["relative_norm_histogram"]["counts"]
    assert view.rel_hist.edges == pytest.approx(rep["relative_norm_histogram"]["edges"])
    assert view.rel_hist.log.isChecked()  # exclusive classes are small beside the shared one
    counts = np.asarray(rep["relative_norm_histogram"]["counts"], dtype=float)
    assert np.allclose(view.rel_hist.bars.opts["height"], np.log10(1 + counts))
    view.rel_hist.log.setChecked(False)
    assert list(view.rel_hist.bars.opts["height"]) == rep["relative_norm_histogram"]["counts"]
    assert view.cos_hist.counts == rep["cosine_histogram"]["counts"]
    assert list(view.cos_hist.bars.opts["height"]) == rep["cosine_histogram"]["counts"]
    assert sum(view.cos_hist.counts) == rep["counts"]["shared"]
    for c in ("base-only", "shared", "variant-only", "dead"):
        assert f"{c} <b>{rep['counts'][c]:,}</b>" in view.rel_hist.key.text()
    assert [line.value() for line in view.rel_hist.lines] == [0.1, 0.3, 0.7, 0.9]
    # The three lists: exactly core's classes, the planted exclusive latents among them.
    sets = latent_sets(cc)
    for i, key in enumerate(("variant-only", "base-only", "shared")):
        assert sorted(view.lists.lists[key].latents()) == sets[key].tolist()
        assert view.lists.tabs.tabText(i).endswith(f"({len(sets[key])})")
    assert set(matched["variant-only"]) <= set(view.lists.lists["variant-only"].latents())
    assert set(matched["base-only"]) <= set(view.lists.lists["base-only"].latents())
    # Sorted by relative norm, largest first; sorting by cosine reorders; the filter box filters.
    shown = view.lists.lists["variant-only"].latents()
    rel = [rep["relative_norm"][j] for j in shown]
    assert rel == sorted(rel, reverse=True)
    shared = view.lists.lists["shared"]
    shared.sortByColumn(2, Qt.SortOrder.AscendingOrder)
    cos = [rep["cosine"][j] for j in shared.latents()]
    assert cos == sorted(cos)
    j = matched["variant-only"][0]
    view.lists.filter.setText(str(j))
    assert j in view.lists.lists["variant-only"].latents()
    assert all(str(k).startswith(str(j)) for key in view.lists.lists for k in view.lists.lists[key].latents())
    view.lists.filter.clear()
    assert sorted(view.lists.lists["shared"].latents()) == sets["shared"].tolist()


def test_dashboard_of_the_planted_latent_shows_cores_contexts(qtbot, tab, planted, tiny_model_dir, variant_dir):
    from core.crosscoder.dashboard import latent_dashboard

    view = open_planted(qtbot, tab, planted)
    cc, matched = planted[1], planted[3]
    pair = models(tiny_model_dir, variant_dir)
    j = matched["variant-only"][0]
    listing = view.lists.lists["variant-only"]
    view.lists.tabs.setCurrentIndex(0)
    assert listing.select_latent(j)
    with qtbot.waitSignal(tab.dashboard_shown, timeout=TIMEOUT_MS) as blocker:
        listing.doubleClicked.emit(listing.currentIndex())  # what a double-click does before 'activated'
        listing.activated.emit(listing.currentIndex())
    assert blocker.args == [j]
    want = latent_dashboard(cc, j, pair, texts=TEXTS)
    got = view.dashboard.data
    assert got.latent == j and got.latent_class == "variant-only" and got.relative_norm > 0.9
    assert [c.value for c in got.contexts] == pytest.approx([c.value for c in want.contexts], rel=1e-5)
    assert [c.acts for c in got.contexts] == [pytest.approx(c.acts, rel=1e-5, abs=1e-6) for c in want.contexts]
    assert [c.tokens for c in got.contexts] == [c.tokens for c in want.contexts]
    assert got.count == want.count and got.frequency == pytest.approx(want.frequency)
    assert "writes nothing into base" in got.effects["base"]["note"]
    assert view.dashboard.effects_stacks[0].message == got.effects["base"]["note"]
    assert view.dashboard.effects_stacks[1].message == ""  # the variant's effects table is shown
    # The busiest latent through Enter: contexts on screen with core's activations.
    busiest = int(np.argmax(tab._work.corpus.count))
    view.select_latent(busiest)
    current = view.lists.current()
    current.setFocus()
    with qtbot.waitSignal(tab.dashboard_shown, timeout=TIMEOUT_MS):
        qtbot.keyClick(current, Qt.Key.Key_Return)
    want = latent_dashboard(cc, busiest, pair, texts=TEXTS)
    got = view.dashboard.data
    assert got.latent == busiest and len(got.contexts) == len(want.contexts) > 0
    for a, b in zip(got.contexts, want.contexts):
        assert a.acts == pytest.approx(b.acts, rel=1e-5, abs=1e-6) and a.tokens == b.tokens
    text = view.dashboard.contexts.toPlainText()
    assert "".join(want.contexts[0].tokens).strip()[:10] in text.replace("\u00a0", " ")
    # Frequencies of the lists come from the documents read (no report.json here).
    freq = dict(zip(range(cc.d_latent), tab._work.corpus.frequency()))
    row = next(r for r in current.model_.rows if r["latent"] == busiest)
    assert row["freq"] == pytest.approx(freq[busiest])
    # Steering: the selected latent's decoder row in its model's units, and the signal.
    direction = tab.selected_direction()
    owner = view.owner(busiest)
    assert torch.allclose(direction.vector, cc.decoder_directions(owner, original_units=True)[busiest])
    assert direction.hook.name == HOOK
    from gui.crosscoder_view import OWN_ROWS

    with qtbot.waitSignal(tab.steer_requested, timeout=1000) as blocker:
        view.lists.steer_button.click()
    assert blocker.args == [busiest, OWN_ROWS]  # each model its own decoder row
    with qtbot.waitSignal(tab.steer_requested, timeout=1000) as blocker:
        view.lists.steer_menu.actions()[1 + owner].trigger()
    assert blocker.args == [busiest, owner]
    with qtbot.waitSignal(tab.steer_requested, timeout=1000) as blocker:
        view.dashboard.steer_buttons[1].click()
    assert blocker.args == [busiest, 1]
    assert tab.steer_source(busiest, 1) == {"kind": "crosscoder", "folder": str(planted[0]), "latent": busiest,
                                            "decoder": 1}


def test_analyses_show_cores_numbers_and_export_writes_every_panel(qtbot, tab, planted, tiny_model_dir, variant_dir,
                                                                   tmp_path):
    from core.crosscoder import ablate, latent_scaling
    from core.crosscoder.dashboard import paired_token_batches
    from core.crosscoder.geometry import geometry
    from core.crosscoder.reasoning import load_prompt_sets, tag_latents

    view = open_planted(qtbot, tab, planted)
    cc = planted[1]
    pair = models(tiny_model_dir, variant_dir)
    variant_only = latent_sets(cc)["variant-only"].tolist()

    with qtbot.waitSignal(tab.analysis_done, timeout=TIMEOUT_MS):
        view.analysis_buttons["scaling"].click()
    want = latent_scaling(cc, list(paired_token_batches(cc, pair, TEXTS)), variant_only, owner=1)
    rows = {r["latent"]: r for r in view.lists.lists["variant-only"].model_.rows}
    for r in want.rows():
        shown = rows[r["latent"]]
        if r["nu_error"] is None:
            assert shown["nu_e"] is None and shown["scaling"] == "no evidence"
        else:
            assert shown["nu_e"] == pytest.approx(r["nu_error"], rel=1e-4, abs=1e-6)
            assert shown["flagged"] == r["flagged"]

    with qtbot.waitSignal(tab.analysis_done, timeout=TIMEOUT_MS):
        view.analysis_buttons["ablation"].click()
    result = ablate(cc, pair, TEXTS, {"variant-only": variant_only}, baselines=("random-matched",), max_length=64,
                    batch_size=4)
    panel = view.ablation
    assert view.right.currentWidget() is panel
    for s in ("variant-only", "variant-only random-matched"):
        for m in ("base", "variant"):
            assert panel.data["values"]["document"]["mean_abs_logit_change"][s][m] == \
                pytest.approx(result.values(s, m, "mean_abs_logit_change").tolist(), rel=1e-4, abs=1e-7)
            edges, counts = panel.histogram(s, m)
            assert sum(counts) == len(TEXTS)
    item = panel.items[("set", 1)]
    assert list(item.getData()[1]) == panel.histogram("variant-only", "variant")[1]
    assert list(panel.items[("random", 0)].getData()[1]) == panel.histogram("variant-only random-matched", "base")[1]
    panel.metric_box.setCurrentIndex(1)  # KL: the curves follow
    assert list(item.getData()[1]) == panel.histogram("variant-only", "variant")[1]

    with qtbot.waitSignal(tab.analysis_done, timeout=TIMEOUT_MS):
        view.analysis_buttons["reasoning"].click()
    tags = tag_latents(cc, pair, load_prompt_sets(), max_length=64)
    assert view.reasoning.table.rowCount() == len(tags.rows())
    assert tab.tags == {r["latent"]: r["tag"] for r in tags.rows()}
    table = view.reasoning.table
    by_tag = sorted(tags.rows(), key=lambda r: r["tag"])  # stable: core's order within a tag
    assert [int(table.item(r, 0).text()) for r in range(table.rowCount())] == [r["latent"] for r in by_tag]
    table.sortItems(0, Qt.SortOrder.AscendingOrder)  # numbers sort as numbers
    shown = [int(table.item(r, 0).text()) for r in range(table.rowCount())]
    assert shown == sorted(r["latent"] for r in tags.rows())

    with qtbot.waitSignal(tab.analysis_done, timeout=TIMEOUT_MS):
        view.analysis_buttons["geometry"].click()
    geo = geometry(dict(zip(["base", "variant"], pair)), hook=HOOK)
    for m in ("base", "variant"):
        x, y = view.geometry_panel.curves[["base", "variant"].index(m)].getData()
        assert list(x) == pytest.approx(geo.curve(m)["loss"]) and list(y) == pytest.approx(geo.curve(m)["fraction"])

    tab.open_dashboard(variant_only[0])
    qtbot.waitUntil(lambda: view.dashboard.data is not None, timeout=TIMEOUT_MS)
    for key in view.panels():
        for suffix in ("csv", "png"):
            out = tab.export(key, str(tmp_path / f"{key}.{suffix}"))
            assert out and (tmp_path / f"{key}.{suffix}").stat().st_size > 0, (key, suffix)
    with open(tmp_path / "lists.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(latent_sets(cc)[k]) for k in ("variant-only", "base-only", "shared"))
    assert {r["latent_scaling"] for r in rows if r["list"] == "variant-only"} != {""}
    with open(tmp_path / "relative-norm.csv") as fh:
        assert [int(r["latents"]) for r in csv.DictReader(fh)] == norm_report(cc)["relative_norm_histogram"]["counts"]
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_a_cancelled_analysis_leaves_the_tab_usable(qtbot, tab, planted):
    view = open_planted(qtbot, tab, planted)
    started = []

    def cancel_at_once(task):
        started.append(task.key)
        tab.cancel()

    tab.runner.started.connect(cancel_at_once)
    with qtbot.waitSignal(tab.task_ended, timeout=TIMEOUT_MS, check_params_cb=lambda key, outcome: key == "ablation"
                          ) as blocker:
        view.analysis_buttons["ablation"].click()
    assert blocker.args == ["ablation", "cancelled"] and started == ["ablation"]
    qtbot.waitUntil(lambda: not tab.busy(), timeout=TIMEOUT_MS)
    assert "cancelled" in view.status.text() and view.ablation.data is None
    assert all(b.isEnabled() for b in view.analysis_buttons.values()) and not view.cancel_button.isVisible()
    tab.runner.started.disconnect(cancel_at_once)
    with qtbot.waitSignal(tab.analysis_done, timeout=TIMEOUT_MS):
        view.analysis_buttons["ablation"].click()
    assert view.ablation.data is not None and view.ablation.stack.currentWidget() is view.ablation.stack.content
    # A dashboard cancelled while the documents are read: the next one still opens.
    j = view.lists.lists["variant-only"].latents()[0]
    tab._work.corpus = None
    task = tab.open_dashboard(j)
    tab.cancel()
    qtbot.waitUntil(lambda: task.outcome is not None, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(tab.dashboard_shown, timeout=TIMEOUT_MS):
        tab.open_dashboard(j)


def test_damaged_folders_and_moved_models_give_clear_messages(qtbot, tab, planted, tmp_path):
    view = tab.view
    cases = {}
    cases["missing"] = tmp_path / "nowhere"
    (tmp_path / "empty").mkdir()
    cases["empty"] = tmp_path / "empty"
    bad = tmp_path / "badjson"
    shutil.copytree(planted[0], bad)
    (bad / "cfg.json").write_text("{not json")
    cases["badjson"] = bad
    cut = tmp_path / "truncated"
    shutil.copytree(planted[0], cut)
    data = (cut / "crosscoder_weights.safetensors").read_bytes()
    (cut / "crosscoder_weights.safetensors").write_bytes(data[:len(data) // 2])
    cases["truncated"] = cut
    wants = {"missing": "does not exist", "empty": "cfg.json is missing", "badjson": "not valid JSON",
             "truncated": "cannot be read"}
    for name, folder in cases.items():
        with qtbot.waitSignal(tab.open_failed, timeout=TIMEOUT_MS) as blocker:
            tab.open(folder)
        assert wants[name] in blocker.args[0], (name, blocker.args[0])
        assert wants[name] in view.stack.message
    # A good folder opens afterwards; a damaged report.json only costs the frequencies.
    moved = tmp_path / "moved"
    shutil.copytree(planted[0], moved)
    (moved / "report.json").write_bytes(b"\xff\xfe garbage")
    cfg = json.loads((moved / "cfg.json").read_text())
    cfg["model_sources"][1] = str(tmp_path / "gone-variant")
    (moved / "cfg.json").write_text(json.dumps(cfg))
    with qtbot.waitSignal(tab.opened, timeout=TIMEOUT_MS):
        tab.open(moved)
    assert "report.json cannot be read" in view.status.text() and "is not there any more" in view.status.text()
    j = view.lists.lists["shared"].latents()[0]
    assert tab.open_dashboard(j) is None  # no task: the message says what to do
    assert "Models…" in view.dashboard.stats.text() and "gone-variant" in view.dashboard.stats.text()
    assert tab.run_analysis("geometry") is None and "gone-variant" in view.status.text()
    tab.set_sources([cfg["model_sources"][0], str(planted[1].cfg.model_sources[1])])
    tab.set_documents(DOCS, "the test texts")
    with qtbot.waitSignal(tab.dashboard_shown, timeout=TIMEOUT_MS):
        tab.open_dashboard(j)
    # A second crosscoder replaces the first; what was shown of the first goes.
    with qtbot.waitSignal(tab.opened, timeout=TIMEOUT_MS):
        tab.open(planted[0])
    assert view.dashboard.data is None and view.dashboard.stack.currentWidget() is view.dashboard.stack.label


def test_main_window_crosscoder_tab(qtbot, make_window, tiny_teacher, planted):
    from gui.crosscoder_session import source_key

    window = make_window(teacher=tiny_teacher, dictionary=None)
    session = window.crosscoder
    assert window.tabs.indexOf(session.view) >= 0
    assert window.tabs.tabText(window.tabs.indexOf(session.view)) == "Crosscoder"
    assert window.act_show_crosscoder.shortcut().toString() == "Ctrl+6"
    window.act_show_crosscoder.trigger()
    assert window.tabs.currentWidget() is session.view
    menus = {m.text().replace("&", ""): [a.text().replace("&", "") for a in m.menu().actions()]
             for m in window.menuBar().actions() if m.menu() is not None}
    assert "Open Crosscoder…" in menus["Model"]
    assert any(t.startswith("Crosscoder") for t in menus["View"])
    with qtbot.waitSignal(session.opened, timeout=TIMEOUT_MS):
        session.open(planted[0])
    # The base model is the window's teacher: the tab borrows a twin instead of loading it again.
    assert set(session._lent()) == {source_key(planted[1].cfg.model_sources[0])}
    # "Steer with this latent" hands a variant-only latent to the Steering tab steering each model
    # with its own decoder row, in proportion: the base at a small fraction of the variant.
    from core.steering import OWN_DECODER
    from gui.crosscoder_view import OWN_ROWS

    cc = planted[1]
    j = session.view.lists.lists["variant-only"].latents()[0]
    session.view.select_latent(j)
    with qtbot.waitSignal(window.steering.direction_added, timeout=TIMEOUT_MS):
        session.view.lists.steer_button.click()
    assert window.tabs.currentWidget() is window.steering.view
    entry = next(iter(window.steering.entries.values()))
    assert entry.source == session.steer_source(j, OWN_ROWS) and entry.source["decoder"] == OWN_DECODER
    assert entry.apply_to == "both"
    norms = cc.W_dec.detach()[j].norm(dim=-1)
    for role, m in (("base", 0), ("variant", 1)):
        d = entry.direction_for(role)
        assert torch.allclose(d.unit, torch.nn.functional.normalize(cc.decoder_directions(m)[j], dim=0), atol=1e-6)
        assert d.gain == pytest.approx(float(norms[m] / norms.max()), rel=1e-4)
    assert entry.direction_for("base").gain < 0.2 and entry.direction_for("variant").gain == 1.0
    # the menu's one-row entry: the variant's row alone, for the variant only
    with qtbot.waitSignal(window.steering.direction_added, timeout=TIMEOUT_MS):
        session.view.lists.steer_menu.actions()[2].trigger()
    entry = window.steering.entries[max(window.steering.entries)]
    assert entry.source == session.steer_source(j, 1) and entry.apply_to == "variant"
    assert torch.allclose(entry.direction.vector, cc.decoder_directions(1)[j]) and entry.direction.gain == 1.0
    window.close()
    assert session.threads_finished(), "the crosscoder worker thread is still running after close"


def test_reasoning_table_shows_cores_tags_in_order(qtbot):
    """Planted activity (as tests/test_crosscoder_analysis.py builds it): latents 0 and 5 are
    specific to one category, 3 to the categories together; the table shows core's rows, by tag
    with core's order within, sorts numbers as numbers and opens a double-clicked latent."""
    from core.crosscoder.reasoning import CONTROL, activity_from_activations, tags_from_activity
    from gui.crosscoder_view import ReasoningPanel

    g = torch.Generator().manual_seed(0)
    per_set = {}
    for s in ("self-reflection", "deductive", "alternative", "contrastive", CONTROL):
        texts = []
        for _ in range(10):
            f = torch.zeros(8, 12)
            pos = int(torch.randint(0, 8, (1,), generator=g))
            f[pos, 0] = 3.0 if s == "self-reflection" else 0.0
            f[pos, 10] = 2.0 if s == "self-reflection" else 0.5
            f[:, 1] = (torch.rand(8, generator=g) < 0.5).float()
            f[pos, 3] = 0.5 if s == CONTROL else 2.0
            f[pos, 5] = {"alternative": 3.0, "deductive": 1.0}.get(s, 0.0)
            texts.append(f)
        per_set[s] = texts
    data = tags_from_activity(activity_from_activations(per_set)).to_json()
    assert {r["latent"]: r["tag"] for r in data["rows"]} == {0: "self-reflection", 10: "self-reflection",
                                                             5: "alternative", 3: "reasoning"}
    panel = ReasoningPanel()
    qtbot.addWidget(panel)
    panel.show_result(data)
    table = panel.table
    shown = [(int(table.item(r, 0).text()), table.item(r, 1).text()) for r in range(table.rowCount())]
    assert shown == [(r["latent"], r["tag"]) for r in sorted(data["rows"], key=lambda r: r["tag"])]
    assert [j for j, t in shown if t == "self-reflection"] == [0, 10]  # core's order: 'only here' first
    table.sortItems(0, Qt.SortOrder.AscendingOrder)
    assert [int(table.item(r, 0).text()) for r in range(table.rowCount())] == [0, 3, 5, 10]
    assert "<b>self-reflection</b> 2" in panel.counts.text()
    with qtbot.waitSignal(panel.latent_activated, timeout=1000) as blocker:
        table.cellDoubleClicked.emit(3, 0)
    assert blocker.args == [10]


def test_latent_lists_keep_the_tag_column_inside_the_view_at_1280_px(qtbot):
    """Wide numbers (5-digit latents, large nu) and long tags in a 1280 px window: the lists
    never run past their right edge (the Tag column was clipped), the Tag column takes what is
    left and elides, and its tooltip holds the whole tag."""
    from gui.crosscoder_view import CrosscoderView, LatentTableModel

    view = CrosscoderView()
    qtbot.addWidget(view)
    view.resize(1280, 800)
    view.show()
    rows = [{"latent": 16000 + j, "rel": 0.95123, "cos": -0.12345, "freq": 0.123, "nu_e": -12.123,
             "nu_r": 123.234, "scaling": ["decoupling?", "shrinkage?", "exclusive", "no evidence"][j % 4],
             "flagged": j % 2 == 0, "tag": ["self-reflection", "contrastive"][j % 2]} for j in range(40)]
    cc = Crosscoder(CrosscoderConfig(d_in=8, d_latent=64), seed=0)
    view.show_crosscoder("<b>test</b>", norm_report(cc), {"variant-only": rows, "base-only": rows[:3],
                                                          "shared": rows[:3]})
    qtbot.wait(50)
    table = view.lists.lists["variant-only"]
    header = table.horizontalHeader()
    tag = LatentTableModel.KEYS.index("tag")
    assert header.sectionPosition(tag) + header.sectionSize(tag) <= table.viewport().width()
    assert header.length() <= table.viewport().width()
    assert table.horizontalScrollBar().maximum() == 0
    assert header.sectionSize(tag) >= header.minimumSectionSize()
    index = table.model().index(0, tag)
    assert table.model().data(index, Qt.ItemDataRole.ToolTipRole) == table.model().data(index)
