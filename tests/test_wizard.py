"""The training wizard: a form generated from the documented configs, validation that names the
field, cloning a spec in, and the cost page's measured estimate."""

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QWizard  # noqa: E402

from core.jobs import JobSpec  # noqa: E402
from core.jobs.spec import describe_spec  # noqa: E402
from gui.wizard import TrainingWizard  # noqa: E402
from tests.test_jobs import tiny_spec, write_corpus  # noqa: E402


@pytest.fixture
def make_wizard(qtbot):
    made = []

    def make(*args, **kw):
        w = TrainingWizard(*args, **kw)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        return w
    yield make
    for w in made:
        w.reject()
        assert w.worker.is_finished()


def test_settings_form_is_generated_from_the_documented_configs(make_wizard):
    w = make_wizard()
    forms = w.settings_page.forms
    for section in ("train", "run"):
        for entry in describe_spec()[section]:
            widget = forms[section].widgets[entry["name"]]
            assert widget.toolTip().startswith(entry["help"])
    assert "d_in" not in forms["sae"].widgets and "architecture" not in forms["sae"].widgets


def test_a_cloned_spec_comes_back_unchanged(make_wizard, tmp_path):
    spec = JobSpec(sae={"architecture": "batchtopk", "d_sae": 2048, "k": 16})
    spec.data.hook = "mlp_out.3"
    spec.data.source = "stream"
    spec.train.lr = 3e-4
    spec.train.total_tokens = 123_456
    spec.run.name = "clone me"
    w = make_wizard(spec)
    assert w.spec() == spec
    assert w.method_page.architecture() == "batchtopk"
    path = w.save_spec_dialog(str(tmp_path / "job.toml"))
    assert JobSpec.from_toml_file(path) == spec


def test_next_is_refused_with_a_message_naming_the_field(qtbot, make_wizard):
    w = make_wizard()
    w.next()
    w.next()
    assert w.currentPage() is w.settings_page
    w.settings_page.forms["sae"].widgets["k"].setValue(10_000)  # more than d_sae = 4096
    w.next()
    assert w.currentPage() is w.settings_page
    assert "'k'" in w.settings_page.error.text()
    assert "border" in w.settings_page.forms["sae"].widgets["k"].styleSheet()
    w.settings_page.forms["train"].widgets["lr"].setText("fast")
    w.settings_page.forms["sae"].widgets["k"].setValue(32)
    w.next()
    assert "'lr'" in w.settings_page.error.text()
    w.settings_page.forms["train"].widgets["lr"].setText("")  # empty: automatic
    w.next()
    assert w.currentPage() is w.cost_page


def test_an_empty_teacher_is_caught_on_the_first_page(make_wizard):
    w = make_wizard()
    w.data_page.teacher.setText("")
    w.next()
    assert w.currentPage() is w.data_page and "'teacher'" in w.data_page.error.text()
    w.data_page.teacher.setText("bundled")
    w.next()
    assert w.currentPage() is w.method_page and w.data_page.error.text() == ""


def test_cost_page_measures_on_this_device(qtbot, make_wizard, tiny_model_dir, tiny_teacher, tmp_path):
    spec = tiny_spec(tiny_model_dir, write_corpus(tmp_path / "docs.jsonl"))
    w = make_wizard(spec, teacher=tiny_teacher)
    assert w.teacher_matches(w.spec())
    with qtbot.waitSignal(w.estimated, timeout=60_000):
        w.next(), w.next(), w.next()
    est = w.cost_page.estimate
    assert est is not None and est.tokens_counted and est.tokens > 0
    assert est.seconds_per_step > 0 and est.extract_tokens_per_s > 0 and est.seconds > 0
    assert est.steps == spec.train.total_steps
    labels = [w.cost_page.table.item(i, 0).text() for i in range(w.cost_page.table.rowCount())]
    assert {"Tokens in the corpus", "Disk for the cache", "Memory", "Time"} <= set(labels)
    assert w.button(QWizard.WizardButton.FinishButton).text() == "Launch"


def test_the_student_method_gets_its_own_generated_settings_and_round_trips(qtbot, make_wizard, tmp_path):
    w = make_wizard()
    w.next()  # method
    w.method_page.set_architecture("student")
    assert w.method_page.kind() == "student"
    w.next()  # settings: the student's forms
    assert w.currentPage() is w.settings_page
    forms = w.settings_page.forms
    for entry in describe_spec("student")["student"]:
        assert forms["student"].widgets[entry["name"]].toolTip().startswith(entry["help"])
    for entry in describe_spec("student")["train"]:
        assert entry["name"] in forms["train"].widgets
    spec = w.spec()
    assert spec.kind == "student" and spec.student.n_layers == 4 and spec.student.d_hidden == 256
    # a newcomer who only picks Student gets the measured demo recipe, data settings included
    assert spec == JobSpec.for_kind("student") and spec.data.corpus == "demo-mixed"

    def data_page_says():
        spec = JobSpec()
        w.data_page.fill(spec)
        return spec.data

    w.method_page.set_architecture("topk")  # back to an SAE: the SAE's own defaults return
    assert data_page_says() == JobSpec().data
    w.data_page.corpus.setText(str(tmp_path / "mine.jsonl"))  # what the user chose stays
    w.method_page.set_architecture("student")
    assert data_page_says().corpus == str(tmp_path / "mine.jsonl") and data_page_says().precision == "fast"
    spec = w.spec()
    # A student spec cloned back in comes out unchanged, on the student's pages.
    spec.student.n_layers = 2
    spec.run.name = "small student"
    w2 = make_wizard(spec)
    assert w2.method_page.kind() == "student" and w2.spec() == spec
    path = w2.save_spec_dialog(str(tmp_path / "student.toml"))
    assert JobSpec.from_toml_file(path) == spec


# -- the pair jobs (issue 6): variant and crosscoder ----------------------------------------------


def test_the_variant_method_gets_its_generated_forms_and_a_valid_spec(make_wizard, tmp_path):
    w = make_wizard()
    w.next()  # method
    w.method_page.set_architecture("variant")
    assert w.method_page.kind() == "variant"
    w.next()  # settings: the variant's forms
    assert w.currentPage() is w.settings_page
    forms = w.settings_page.forms
    for entry in describe_spec("variant")["variant"]:
        assert forms["variant"].widgets[entry["name"]].toolTip().startswith(entry["help"])
    assert set(forms["train"].widgets) == {e["name"] for e in describe_spec("variant")["train"]}
    forms["variant"].widgets["layers"].setText("9-3")
    w.next()
    assert w.currentPage() is w.settings_page and "'layers'" in w.settings_page.error.text()
    forms["variant"].widgets["layers"].setText("2-5")
    spec = w.spec()
    assert spec.kind == "variant" and spec.variant.layers == "2-5" and spec.data.teacher == "bundled"
    spec.run.name = "my variant"
    spec.data.precision = "fast"
    spec.train.total_steps = 33
    w2 = make_wizard(spec)
    assert w2.method_page.kind() == "variant" and w2.spec() == spec
    path = w2.save_spec_dialog(str(tmp_path / "variant.toml"))
    assert JobSpec.from_toml_file(path) == spec


def test_the_crosscoder_method_takes_the_base_from_the_first_page_and_a_variant_folder(make_wizard, tmp_path):
    from core.jobs import Run

    w = make_wizard()
    w.data_page.teacher.setText("/models/base")
    w.next()
    w.method_page.set_architecture("crosscoder")
    assert w.method_page.kind() == "crosscoder"
    w.next()
    forms = w.settings_page.forms
    assert "base" not in forms["pair"].widgets and "variant" in forms["pair"].widgets
    assert "architecture" in forms["crosscoder"].widgets and "d_in" not in forms["crosscoder"].widgets
    for entry in describe_spec("crosscoder")["crosscoder"]:
        assert forms["crosscoder"].widgets[entry["name"]].toolTip().startswith(entry["help"])
    # the demo's variant run by default; an empty field is refused, naming the field
    assert forms["pair"].widgets["variant"].text() == "run:variant-demo"
    forms["pair"].widgets["variant"].setText("")
    w.next()
    assert w.currentPage() is w.settings_page and "'variant'" in w.settings_page.error.text()
    # 'Latest variant run' finds the newest finished variant run's model folder.
    assert w.settings_page.use_latest_variant() is None and "No variant run" in w.settings_page.error.text()
    run = Run.create(JobSpec.for_kind("variant"))
    (run.artifacts_dir / "variant").mkdir(parents=True)
    (run.artifacts_dir / "variant" / "config.json").write_text("{}")
    run.write_status(state="done")
    assert w.settings_page.use_latest_variant() == str(run.artifacts_dir / "variant")
    forms["crosscoder"].widgets["d_latent"].setValue(1024)
    forms["crosscoder"].widgets["architecture"].setCurrentText("l1")
    spec = w.spec()
    assert spec.kind == "crosscoder" and spec.pair.base == spec.data.teacher == "/models/base"
    assert spec.pair.variant == str(run.artifacts_dir / "variant")
    assert spec.crosscoder["d_latent"] == 1024 and spec.crosscoder["architecture"] == "l1"
    w2 = make_wizard(spec)
    assert w2.method_page.kind() == "crosscoder" and w2.spec() == spec
    assert w2.data_page.teacher.text() == "/models/base"
    path = w2.save_spec_dialog(str(tmp_path / "crosscoder.toml"))
    assert JobSpec.from_toml_file(path) == spec


def test_cost_pages_of_the_pair_jobs_measure_on_this_device(qtbot, make_wizard, tiny_model_dir, tiny_teacher, tmp_path):
    from tests.test_crosscoder_job import crosscoder_spec
    from tests.test_variant_job import variant_spec

    corpus = write_corpus(tmp_path / "docs.jsonl", n=30)
    for spec, rows in ((variant_spec(tiny_model_dir, corpus), {"Trained parameters", "Disk for the variant and checkpoints"}),
                       (crosscoder_spec(tiny_model_dir, tiny_model_dir, corpus), {"Crosscoder", "Disk for the paired cache"})):
        w = make_wizard(spec, teacher=tiny_teacher)
        assert w.teacher_matches(w.spec())
        with qtbot.waitSignal(w.estimated, timeout=60_000):
            w.next(), w.next(), w.next()
        est = w.cost_page.estimate
        assert est is not None, w.cost_page.status.text()
        assert est.seconds and est.seconds > 0 and est.steps == spec.train.total_steps
        labels = {w.cost_page.table.item(i, 0).text() for i in range(w.cost_page.table.rowCount())}
        assert rows | {"Tokens in the corpus", "Memory", "Time"} <= labels


def test_the_demo_button_offers_every_bundled_demo_set(make_wizard):
    from core.documents import DEMO_SETS

    w = make_wizard()
    actions = w.data_page.demo_menu.actions()
    assert [a.text().split(":")[0] for a in actions] == list(DEMO_SETS)
    actions[list(DEMO_SETS).index("demo-mixed")].trigger()
    assert w.spec().data.corpus == "demo-mixed"
