"""The Steering tab through the real main window (pytest-qt, offscreen) on tiny random models: the
text in every pane is what core.steering generates on its own, a slider move regenerates only the
steered panes, a newer move cancels the older generation without leaving text or hooks behind,
presets round-trip and bad ones give a message. Every test checks, after closing the window, that
no worker thread is left running and no timer is pending."""

import json
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import torch  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from core.dictionaries import load  # noqa: E402
from core.steering import Direction, generate_text  # noqa: E402
from tests.conftest import build_tiny_model, close_and_check  # noqa: E402
from tests.test_feature_view import LAYER, TIMEOUT_MS, loaded, make_sae  # noqa: E402

PROMPT = "the quick brown fox"
N = 12


@pytest.fixture
def sae_dir(tmp_path):
    """A tiny TopK SAE at the tiny teacher's last layer (resid_post.3)."""
    return make_sae(tmp_path / "tiny-sae")


@pytest.fixture(scope="module")
def probe(tiny_teacher):
    """A twin of the tiny teacher for the tests' own core calls, which no window thread touches."""
    from gui.shadow import twins

    return twins(tiny_teacher)[1]


@pytest.fixture
def tab(qtbot, probe, tiny_teacher, sae_dir):
    """A window on the tiny teacher with the tiny SAE, the Steering tab shown. Closed afterwards:
    the tab's worker threads must have ended and its debounce timer be idle."""
    from gui.main_window import MainWindow

    window = MainWindow(teacher=tiny_teacher, dictionary=str(sae_dir))
    qtbot.addWidget(window)
    window.show()
    loaded(qtbot, window)
    window.act_show_steering.trigger()
    assert window.tabs.currentWidget() is window.steering.view
    session = window.steering
    session.view.prompt.setPlainText(PROMPT)
    session.view.max_tokens.setValue(N)
    yield window, session
    close_and_check(window)
    assert session.threads_finished(), "a steering worker thread is still running after close"
    assert not session.debounce.isActive(), "the steering debounce timer is still pending after close"


def add(qtbot, session, source, alpha=0.0, apply_to=None):
    with qtbot.waitSignal(session.direction_added, timeout=TIMEOUT_MS) as blocker:
        session.add_direction(source, alpha, apply_to)
    return session.view.rows[blocker.args[0]]


def feature(sae_dir, index=5):
    return {"kind": "feature", "dictionary": str(sae_dir), "index": index}


def wait_done(qtbot, session, *panes):
    qtbot.waitUntil(lambda: not session._busy() and not session.debounce.isActive()
                    and all(p.stream is not None and p.stream.done for p in panes), timeout=TIMEOUT_MS)


def steering_hooks(teacher):
    return [fn for module in teacher.model.modules()
            for hooks in (module._forward_hooks, module._forward_pre_hooks) for fn in hooks.values()
            if getattr(fn, "__module__", "") == "core.steering"]


def reference(teacher, sae_dir, alpha, index=5, n=N):
    """The continuation core gives on its own (on a twin the window's threads never touch)."""
    terms = [(Direction.from_feature(load(sae_dir), index, teacher), alpha)] if alpha is not None else []
    return generate_text(teacher, PROMPT, terms, max_new_tokens=n)


def test_slider_range_is_cores():
    from core.steering import SLIDER_RANGE
    from gui.steering_view import SLIDER_RANGE as VIEW_RANGE

    assert VIEW_RANGE == SLIDER_RANGE


def test_adding_a_direction_shows_a_slider_in_step_with_its_box(qtbot, tab, sae_dir):
    window, session = tab
    view = session.view
    assert not view.rows and view.empty.isVisibleTo(view)
    window.features.dictionary.labels.set(7, "bird words")
    dialog = session.open_add_dialog("feature")
    assert dialog.feature_index.isEnabled() and dialog.feature_index.maximum() == 63
    dialog.search.setText("bird")
    assert dialog.results.count() == 1 and dialog.results.item(0).text() == "#7  bird words"
    assert dialog.feature_index.value() == 7  # the best match is picked
    with qtbot.waitSignal(session.direction_added, timeout=TIMEOUT_MS) as blocker:
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    row = view.rows[blocker.args[0]]
    qtbot.waitUntil(lambda: row.isVisibleTo(view), timeout=1000)  # a widget added to a shown one shows queued
    assert not view.empty.isVisibleTo(view)
    assert "#7 bird words" in row.name.text() and f"resid_post.{LAYER}" in row.detail.text()
    entry = session.entries[row.uid]
    assert torch.equal(entry.direction.vector, load(sae_dir).W_dec[7].detach().float())
    row.slider.setValue(25)
    assert row.box.value() == pytest.approx(0.25) and entry.alpha == pytest.approx(0.25)
    row.box.setValue(-0.5)
    assert row.slider.value() == -50 and entry.alpha == pytest.approx(-0.5)
    row.box.setValue(3.0)  # past the slider's end: the slider rests at its end, the box keeps 3
    assert row.slider.value() == row.slider.maximum() and entry.alpha == pytest.approx(3.0)
    session.cancel()
    row.remove.click()
    assert not view.rows and row.uid not in session.entries

    # A direction that cannot be resolved says why on the tab.
    with qtbot.waitSignal(session.direction_failed, timeout=TIMEOUT_MS) as blocker:
        session.add_direction(feature(sae_dir, 64))
    assert "Feature 64 does not exist" in blocker.args[0] and "Feature 64" in view.status.text()


def test_the_dialog_adds_contrasts_crosscoder_latents_and_vector_files(qtbot, tab, tmp_path):
    from core.contrast import ContrastVector, contrasts_dir
    from core.crosscoder import Crosscoder, CrosscoderConfig

    window, session = tab
    view = session.view
    D = 32
    ContrastVector("formal", torch.randn(D), "formal", "casual", hook="resid_post.2", mean=torch.zeros(D),
                   std=torch.ones(D)).save(contrasts_dir())
    Crosscoder(CrosscoderConfig(d_in=D, d_latent=16, k=4, hook="resid_post.1"), seed=0).save(tmp_path / "cc")
    vec = Direction.from_vector("shift", torch.randn(D), "resid_post.0").save(tmp_path / "shift.safetensors")

    dialog = session.open_add_dialog("contrast")
    qtbot.waitUntil(lambda: dialog.contrasts.count() == 1, timeout=TIMEOUT_MS)  # listed on a worker
    assert dialog.contrasts.item(0).text() == "formal"
    with qtbot.waitSignal(session.direction_added, timeout=TIMEOUT_MS) as blocker:
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    row = view.rows[blocker.args[0]]
    assert "resid_post.2 · saved contrast" in row.detail.text() and row.apply_to == "both"

    dialog = session.open_add_dialog("crosscoder")
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert "Choose a crosscoder folder" in dialog.message.text() and dialog.isVisible()
    dialog.crosscoder.setText(str(tmp_path / "cc"))
    dialog.latent.setValue(7)
    with qtbot.waitSignal(session.direction_added, timeout=TIMEOUT_MS) as blocker:
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    row = view.rows[blocker.args[0]]
    assert "latent 7 (variant decoder)" in row.name.text() and "relative decoder norm" in row.name.toolTip()
    assert row.apply_to == "variant"  # a latent's decoder row steers the model it belongs to

    dialog = session.open_add_dialog("file")
    dialog.vector_path.setText(str(vec))
    with qtbot.waitSignal(session.direction_added, timeout=TIMEOUT_MS) as blocker:
        dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert "resid_post.0 · vector file" in view.rows[blocker.args[0]].detail.text()
    assert len(view.rows) == 3


def test_slider_regenerates_only_the_steered_pane(qtbot, tab, sae_dir, probe):
    window, session = tab
    view = session.view
    row = add(qtbot, session, feature(sae_dir), 0.0)
    unsteered, steered = view.panes[("base", "unsteered")], view.panes[("base", "steered")]
    assert not view.panes[("variant", "unsteered")].isVisibleTo(view)  # no variant: two panes
    with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
        qtbot.keyClick(view.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_done(qtbot, session, unsteered, steered)
    expected = reference(probe, sae_dir, None)
    assert unsteered.continuation == expected
    assert steered.continuation == expected  # strength 0: steered text equals unsteered
    assert steered.stream is not unsteered.stream  # and it was generated, hooks and all
    assert "tok/s" in unsteered.status.text() and "done" in steered.status.text()
    assert unsteered.text.toPlainText() == PROMPT + expected

    first, shown = unsteered.stream, unsteered.text.toPlainText()
    row.slider.setValue(100)
    wait_done(qtbot, session, steered)
    assert [s.key[0] for s in session.tasks["base"].streams] == ["steered"]  # only the steered one ran
    assert unsteered.stream is first and unsteered.text.toPlainText() == shown
    assert steered.continuation == reference(probe, sae_dir, 1.0)
    assert steered.continuation != expected, "strength 1 should change the tiny model's continuation"
    assert "strength 1 = " in steered.status.text() and f"resid_post.{LAYER}" in steered.status.text()
    assert not steering_hooks(session.slots["base"].teacher)


def test_a_second_move_cancels_the_first_without_stale_text_or_hooks(qtbot, tab, sae_dir, probe):
    window, session = tab
    view = session.view
    n = 40
    view.max_tokens.setValue(n)
    row = add(qtbot, session, feature(sae_dir), 0.0)
    steered = view.panes[("base", "steered")]
    with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
        session.generate()
    twin = session.slots["base"].teacher
    slow = twin.layers[0].register_forward_pre_hook(lambda module, args: time.sleep(0.03))
    try:
        row.slider.setValue(50)
        qtbot.waitUntil(lambda: steered.stream is not None and steered.stream.key[-1] == (row.uid, 0.5)
                        and steered.count >= 3, timeout=TIMEOUT_MS)
        first_task, first = session.tasks["base"], steered.stream
        row.slider.setValue(-50)  # while the 0.5 continuation is still being written
        qtbot.waitUntil(lambda: first_task.outcome is not None, timeout=TIMEOUT_MS)
        assert first_task.outcome == "cancelled"
        wait_done(qtbot, session, steered)
        assert steered.stream is not first and not first.done and len(first.token_ids) < n
    finally:
        slow.remove()
    assert steered.continuation == reference(probe, sae_dir, -0.5, n=n)  # no 0.5 piece in it
    assert not steering_hooks(twin)
    ids = torch.tensor([twin.tokenize([PROMPT], 64)[0]])
    with torch.no_grad():
        assert torch.equal(twin.model(input_ids=ids).logits, probe.model(input_ids=ids).logits)

    # Back to 0.5: the cancelled continuation resumes where it stopped and ends as a fresh one would.
    row.slider.setValue(50)
    wait_done(qtbot, session, steered)
    assert steered.stream is first
    assert steered.continuation == reference(probe, sae_dir, 0.5, n=n)


def test_escape_cancels_and_generate_continues(qtbot, tab, sae_dir):
    window, session = tab
    view = session.view
    view.max_tokens.setValue(60)
    add(qtbot, session, feature(sae_dir), 0.4)
    twin = session.slots["base"].teacher
    slow = twin.layers[0].register_forward_pre_hook(lambda module, args: time.sleep(0.02))
    pane = view.panes[("base", "unsteered")]
    try:
        session.generate()
        qtbot.waitUntil(lambda: pane.count >= 2, timeout=TIMEOUT_MS)
        with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
            window.act_cancel.trigger()  # Esc
        assert session.tasks["base"].outcome == "cancelled" and not pane.stream.done
        assert "stopped" in pane.status.text() and not view.cancel_button.isEnabled()
    finally:
        slow.remove()
    session.generate()
    wait_done(qtbot, session, pane)
    assert len(pane.stream.token_ids) == 60 or pane.stream.done
    assert not steering_hooks(twin)


def test_the_gui_keeps_running_while_it_generates_and_a_slider_is_dragged(qtbot, tab, sae_dir):
    from gui.stall_probe import StallProbe

    window, session = tab
    view = session.view
    view.max_tokens.setValue(200)
    row = add(qtbot, session, feature(sae_dir), 0.0)
    steered = view.panes[("base", "steered")]
    with StallProbe() as probe:
        session.generate()
        for value in range(0, 101, 10):  # a drag: a value every 50 ms, then rest
            row.slider.setValue(value)
            qtbot.wait(50)
        wait_done(qtbot, session, steered)
    stats = probe.stats()
    print(f"\nsteering, 2 x 200 tokens of the tiny model and a drag: {stats}")
    assert steered.stream.key[-1] == (row.uid, 1.0) and steered.stream.done  # 200 tokens or EOS
    assert len(view.panes[("base", "unsteered")].stream.token_ids) == 200
    assert stats.ticks > 20 and stats.max_ms < 1000


def test_variant_gets_its_own_panes_and_the_base_stays_put(qtbot, tab, sae_dir, tmp_path):
    from core.models import load_teacher

    window, session = tab
    view = session.view
    folder = build_tiny_model(tmp_path / "variant", seed=3)
    with qtbot.waitSignal(session.variant_changed, timeout=TIMEOUT_MS):
        session.load_variant(str(folder))
    assert session.slots["variant"] is not None
    assert all(view.panes[(m, k)].isVisibleTo(view) for m in ("base", "variant") for k in ("unsteered", "steered"))
    row = add(qtbot, session, feature(sae_dir), 1.0, apply_to="variant")
    assert row.apply_to == "variant"
    panes = [view.panes[(m, k)] for m in ("base", "variant") for k in ("unsteered", "steered")]
    with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
        session.generate()
    wait_done(qtbot, session, *panes)
    b_u, b_s, v_u, v_s = panes
    variant = load_teacher(folder, device="cpu")  # its own copy for the reference
    assert v_u.continuation == generate_text(variant, PROMPT, max_new_tokens=N)
    direction = Direction.from_feature(load(sae_dir), 5, variant)
    assert v_s.continuation == generate_text(variant, PROMPT, [(direction, 1.0)], max_new_tokens=N)
    assert v_s.continuation != v_u.continuation
    assert b_s.stream is b_u.stream and b_s.continuation == b_u.continuation  # the base is not steered
    assert "No direction steers the base" in b_s.status.text()

    base_streams = (b_u.stream, b_s.stream)
    before = v_s.continuation
    row.slider.setValue(-100)
    wait_done(qtbot, session, v_s)
    assert (b_u.stream, b_s.stream) == base_streams  # the base stays put
    assert v_s.continuation == generate_text(variant, PROMPT, [(direction, -1.0)], max_new_tokens=N) != before
    session.clear_variant()
    assert not view.panes[("variant", "steered")].isVisibleTo(view)


def test_preset_round_trip(qtbot, tab, sae_dir, tmp_path):
    window, session = tab
    view = session.view
    vec = Direction.from_vector("shift", torch.randn(32), "resid_post.2").save(tmp_path / "shift.safetensors")
    add(qtbot, session, feature(sae_dir, 9), 0.3)
    add(qtbot, session, {"kind": "file", "path": str(vec)}, -0.2, apply_to="base")
    view.set_settings("love is", 7, 0.5, 3)
    path = tmp_path / "preset.json"
    with qtbot.waitSignal(session.preset_saved, timeout=TIMEOUT_MS):
        session.save_preset(str(path))
    data = json.loads(path.read_text())
    assert data["format"] == "distillscope-steering-preset/1"
    assert (data["prompt"], data["max_new_tokens"], data["temperature"], data["seed"]) == ("love is", 7, 0.5, 3)
    assert data["base"] == session.slots["base"].source and data["variant"] == ""
    assert [(d["source"], d["alpha"], d["apply_to"]) for d in data["directions"]] == [
        (feature(sae_dir, 9), 0.3, "both"), ({"kind": "file", "path": str(vec)}, -0.2, "base")]
    before = [(r.name.text(), r.alpha, r.apply_to, r.detail.text()) for r in view.rows.values()]

    session.cancel()
    for uid in list(view.rows):
        view.rows[uid].remove.click()
    view.set_settings("something else", 40, 0.0, 0)
    with qtbot.waitSignal(session.preset_loaded, timeout=TIMEOUT_MS):
        session.load_preset(str(path))
    qtbot.waitUntil(lambda: len(view.rows) == 2 and not session._pending, timeout=TIMEOUT_MS)
    after = [(r.name.text(), r.alpha, r.apply_to, r.detail.text()) for _, r in sorted(view.rows.items())]
    assert after == before
    assert view.settings() == ("love is", 7, 0.5, 3)
    wait_done(qtbot, session, view.panes[("base", "steered")])  # a loaded preset generates by itself


BAD_PRESETS = [
    (b"", "is empty"),
    (b"{not json", "not valid JSON (line 1"),
    (b"\xff\xfe\x00binary\x00", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"format": "something/2"}).encode(), "not a steering preset"),
    (json.dumps({"format": "distillscope-steering-preset/1", "directions": {"a": 1}}).encode(), "not a list"),
    (json.dumps({"format": "distillscope-steering-preset/1", "directions": [
        {"source": {"kind": "feature", "dictionary": "x", "index": 1}, "alpha": "strong"}]}).encode(),
     "strength is 'strong'"),
    (json.dumps({"format": "distillscope-steering-preset/1", "directions": [
        {"source": {"kind": "telepathy"}, "alpha": 1}]}).encode(), "unknown kind 'telepathy'"),
    (json.dumps({"format": "distillscope-steering-preset/1", "max_new_tokens": 0}).encode(), "max_new_tokens 0"),
]


def test_malformed_presets_give_a_message(qtbot, tab, sae_dir, tmp_path):
    window, session = tab
    view = session.view
    row = add(qtbot, session, feature(sae_dir), 0.2)
    for i, (content, match) in enumerate(BAD_PRESETS + [(None, "does not exist")]):
        path = tmp_path / f"bad{i}.json"
        if content is not None:
            path.write_bytes(content)
        with qtbot.waitSignal(session.preset_failed, timeout=TIMEOUT_MS) as blocker:
            session.load_preset(str(path))
        assert match in blocker.args[0], (match, blocker.args[0])
        assert match in view.status.text()
        assert session.error_box is not None and match in session.error_box.text() + session.error_box.informativeText()
        session.error_box.close()
        assert list(view.rows) == [row.uid] and row.alpha == pytest.approx(0.2)  # nothing changed

    # A well-formed preset whose direction cannot be found loads the rest and says what is missing.
    good = {"format": "distillscope-steering-preset/1", "prompt": "p", "directions": [
        {"source": feature(sae_dir, 3), "alpha": 0.1},
        {"source": {"kind": "file", "path": str(tmp_path / "gone.safetensors")}, "alpha": 0.5}]}
    (tmp_path / "half.json").write_text(json.dumps(good))
    with qtbot.waitSignal(session.direction_failed, timeout=TIMEOUT_MS) as blocker:
        session.load_preset(str(tmp_path / "half.json"))
    assert "gone.safetensors' does not exist" in blocker.args[0]
    qtbot.waitUntil(lambda: len(view.rows) == 1 and not session._pending, timeout=TIMEOUT_MS)
    wait_done(qtbot, session, view.panes[("base", "steered")])


def test_sampling_uses_the_seed_for_every_pane(qtbot, tab, sae_dir, probe):
    window, session = tab
    view = session.view
    add(qtbot, session, feature(sae_dir), 0.7)
    view.temperature.setValue(0.8)
    assert view.seed.isEnabled()
    view.seed.setValue(3)
    panes = view.panes[("base", "unsteered")], view.panes[("base", "steered")]
    with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
        session.generate()
    wait_done(qtbot, session, *panes)
    direction = Direction.from_feature(load(sae_dir), 5, probe)
    kw = dict(max_new_tokens=N, temperature=0.8, seed=3)
    assert panes[0].continuation == generate_text(probe, PROMPT, **kw)
    assert panes[1].continuation == generate_text(probe, PROMPT, [(direction, 0.7)], **kw)
    view.seed.setValue(4)  # another seed is another continuation, generated anew
    with qtbot.waitSignal(session.generated, timeout=TIMEOUT_MS):
        session.generate()
    wait_done(qtbot, session, *panes)
    assert panes[0].continuation == generate_text(probe, PROMPT, max_new_tokens=N, temperature=0.8, seed=4)


def test_steered_subtitle_names_the_moving_directions_first():
    from types import SimpleNamespace

    from gui.steering_session import _strengths_text

    def entry(name, alpha, gain=1.0):
        return SimpleNamespace(name=name, alpha=alpha, direction_for=lambda role: SimpleNamespace(gain=gain))

    idle = [entry(f"#{i}", 0.0) for i in range(3)]
    assert _strengths_text(idle + [entry("latent 471", 0.6, 0.02)], "base") == \
        "latent 471 = +0.60 × 0.02 (own row) · 3 more at 0"
    assert _strengths_text(idle, "base") == "all directions at 0"
    assert _strengths_text(idle[:1], "base") == "the direction at 0"
    assert _strengths_text([], "base") == "no direction steers this model"
