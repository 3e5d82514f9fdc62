"""Document loading: every bad input becomes a Problem, good documents beside it still load."""

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.documents import (
    MAX_FILE_BYTES,
    Corpus,
    Document,
    from_text,
    load_demo,
    load_path,
    load_paths,
)
from core.errors import DocumentError
from core.paths import resources_dir


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def jsonl(*rows):
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def messages(corpus):
    return " | ".join(p.message for p in corpus.problems)


# ---------------------------------------------------------------- pasted text


def test_from_text():
    c = from_text("hello world", label="greeting")
    assert len(c) == 1 and not c.problems
    assert c.documents[0] == Document("pasted-1", "hello world", "pasted", "greeting")
    assert from_text("x", id="mine").documents[0].id == "mine"


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_from_text_empty_is_a_problem(text):
    c = from_text(text)
    assert len(c) == 0
    assert "empty" in c.problems[0].message


# ---------------------------------------------------------------- plain text files


def test_txt_and_md_are_one_document_each(tmp_path):
    p = write(tmp_path / "a.txt", "line one\r\nline two\n")
    c = load_path(p)
    assert [d.text for d in c] == ["line one\nline two\n"]
    assert c.documents[0].id == "a.txt" and c.documents[0].source == str(p)
    assert c.documents[0].label is None and not c.problems
    assert len(load_path(write(tmp_path / "b.markdown", "# Title\n\nBody"))) == 1


def test_missing_path_raises_clear_error(tmp_path):
    with pytest.raises(DocumentError) as err:
        load_path(tmp_path / "nope.txt")
    assert "does not exist" in str(err.value) and "nope.txt" in str(err.value)
    with pytest.raises(DocumentError, match="nope"):
        load_paths([tmp_path, tmp_path / "nope"])


def test_empty_and_whitespace_files(tmp_path):
    c = load_path(write(tmp_path / "empty.txt", b""))
    assert len(c) == 0 and "empty" in messages(c)
    c = load_path(write(tmp_path / "blank.md", " \n\t\n"))
    assert len(c) == 0 and "only whitespace" in messages(c)
    for name in ("blank.jsonl", "blank.csv"):
        c = load_path(write(tmp_path / name, "\n \n"))
        assert len(c) == 0 and "only whitespace" in messages(c)


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(1, 32)) * 20, b"\xff\xd8" * 300]
)
def test_binary_file_is_refused(tmp_path, data):
    c = load_path(write(tmp_path / "image.txt", data))
    assert len(c) == 0
    assert "looks like a binary file" in messages(c)


def test_non_utf8_bytes_are_replaced_and_reported(tmp_path):
    # cp1252 text: mostly ASCII, one undecodable byte on line 3.
    data = "first line\nsecond\ncaf\xe9 au lait\n".encode("cp1252")
    c = load_path(write(tmp_path / "latin.txt", data))
    assert len(c) == 1 and c.documents[0].text.startswith("first line")
    assert "caf\ufffd au lait" in c.documents[0].text
    (problem,) = c.problems
    assert problem.line == 3
    assert "not valid UTF-8" in problem.message and "Re-save" in problem.message


def test_bom_utf8_and_utf16_decode(tmp_path):
    c = load_path(write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello"))
    assert c.documents[0].text == "hello" and not c.problems
    c = load_path(write(tmp_path / "u16.txt", "h\u00e9llo".encode("utf-16")))
    assert c.documents[0].text == "h\u00e9llo" and not c.problems


def test_file_over_limit_is_refused(tmp_path):
    p = write(tmp_path / "big.txt", "x" * 2000)
    c = load_path(p, max_bytes=1000)
    assert len(c) == 0
    assert "over the" in messages(c) and "Split it" in messages(c)


def test_sparse_2gb_file_is_refused_without_reading(tmp_path, monkeypatch):
    p = tmp_path / "huge.txt"
    p.touch()
    os.truncate(p, 2 * 1024**3)  # sparse: no disk used, but stat says 2 GB

    def no_open(*a, **k):
        raise AssertionError("a file over the limit must not be opened")

    monkeypatch.setattr("builtins.open", no_open)
    t0 = time.perf_counter()
    c = load_path(p)
    assert time.perf_counter() - t0 < 0.5
    assert len(c) == 0
    assert "2.0 GB" in messages(c) and f"{MAX_FILE_BYTES // 1024**2}.0 MB" in messages(c)


# ---------------------------------------------------------------- folders


def test_folder_labels_sorting_hidden_and_unknown(tmp_path):
    write(tmp_path / "root.txt", "at the root")
    write(tmp_path / "cats" / "b.txt", "cat b")
    write(tmp_path / "cats" / "a.md", "cat a")
    write(tmp_path / "dogs" / "puppies" / "p.txt", "puppy")
    write(tmp_path / ".git" / "x.txt", "hidden folder")
    write(tmp_path / ".hidden.txt", "hidden file")
    write(tmp_path / "report.pdf", b"%PDF-1.4")
    write(tmp_path / "Makefile", "all:")
    c = load_path(tmp_path)
    assert [d.id for d in c] == ["root.txt", "cats/a.md", "cats/b.txt", "dogs/puppies/p.txt"]
    assert [d.label for d in c] == [None, "cats", "cats", "dogs/puppies"]
    assert c.labels() == ["cats", "dogs/puppies"]
    assert c.name == tmp_path.name
    skipped = sorted(os.path.basename(p.source) for p in c.problems)
    assert skipped == ["Makefile", "report.pdf"]
    assert all("not supported" in p.message and ".jsonl" in p.message for p in c.problems)


def test_folder_mixed_good_and_bad_files(tmp_path):
    write(tmp_path / "good.txt", "fine")
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "bin.txt", b"\x00\x01\x02")
    write(tmp_path / "rows.jsonl", jsonl({"text": "row", "label": "x"}, "{bad"))
    c = load_path(tmp_path)
    assert sorted(d.text for d in c) == ["fine", "row"]
    assert len(c.problems) == 3


def test_empty_folder_is_a_problem(tmp_path):
    c = load_path(tmp_path)
    assert len(c) == 0 and "No documents found" in messages(c)


def test_fifo_is_skipped_not_blocked_on(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "pipe.txt")
    c = load_path(tmp_path / "pipe.txt")
    assert len(c) == 0 and "not a regular file" in messages(c)


# ---------------------------------------------------------------- JSONL


def test_jsonl_good_rows_load_beside_bad_ones(tmp_path):
    p = write(
        tmp_path / "data.jsonl",
        jsonl(
            {"text": "good one", "label": "a"},  # 1
            "",  # 2 blank: ignored
            '{"text": "broken",',  # 3 malformed
            '["a", "list"]',  # 4 not an object
            {"body": "x", "title": "y"},  # 5 missing text field
            {"text": 42},  # 6 non-string text
            {"text": "   "},  # 7 empty text
            {"text": "good two", "label": 7},  # 8 label -> str
            {"text": "good three", "label": None},  # 9
        ),
    )
    c = load_path(p)
    assert [d.text for d in c] == ["good one", "good two", "good three"]
    assert [d.label for d in c] == ["a", "7", None]
    assert [d.id for d in c] == ["data.jsonl:1", "data.jsonl:8", "data.jsonl:9"]
    assert c.documents[1].source == f"{p}:8"
    by_line = {pr.line: pr.message for pr in c.problems}
    assert sorted(by_line) == [3, 4, 5, 6, 7]
    assert "not valid JSON" in by_line[3]
    assert "JSON object" in by_line[4] and "a list" in by_line[4]
    assert "'body'" in by_line[5] and "'title'" in by_line[5] and "text field" in by_line[5]
    assert "a number, not a string" in by_line[6]
    assert "empty" in by_line[7]
    assert all(pr.source == str(p) for pr in c.problems)


def test_jsonl_text_and_label_field_options(tmp_path):
    p = write(tmp_path / "d.jsonl", jsonl({"body": "hello", "topic": "greet"}))
    c = load_path(p, text_field="body", label_field="topic")
    assert [(d.text, d.label) for d in c] == [("hello", "greet")] and not c.problems


def test_jsonl_ids_used_when_unique(tmp_path):
    p = write(
        tmp_path / "d.jsonl",
        jsonl(
            {"id": "a", "text": "1"},
            {"id": 5, "text": "2"},
            {"id": "a", "text": "3"},
            {"text": "4"},
        ),
    )
    c = load_path(p)
    assert [d.id for d in c] == ["a", "5", "d.jsonl:3", "d.jsonl:4"]
    assert c.problems[0].line == 3 and "used by an earlier row" in c.problems[0].message


def test_jsonl_line_separator_inside_string_is_not_a_line_break(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 raw; str.splitlines() would cut there.
    row = json.dumps({"text": "a\u2028b\x0cc"}, ensure_ascii=False)
    c = load_path(write(tmp_path / "d.jsonl", row + "\r\n"))
    assert [d.text for d in c] == ["a\u2028b\x0cc"] and not c.problems


def test_jsonl_deeply_nested_line_is_a_problem(tmp_path):
    c = load_path(write(tmp_path / "d.jsonl", "[" * 100_000 + "\n" + jsonl({"text": "ok"})))
    assert [d.text for d in c] == ["ok"] and c.problems[0].line == 1


def test_problems_per_file_are_capped(tmp_path):
    c = load_path(write(tmp_path / "d.jsonl", "nope\n" * 500 + jsonl({"text": "ok"})))
    assert len(c) == 1
    assert len(c.problems) == 21 and "480 more problems" in c.problems[-1].message


# ---------------------------------------------------------------- CSV / TSV


def test_csv_rows_with_wrong_column_count(tmp_path):
    p = write(
        tmp_path / "t.csv",
        'text,label\n"hello, world",greet\nonly one field\n"multi\nline",x\nbad,row,extra\n',
    )
    c = load_path(p)
    assert [(d.text, d.label) for d in c] == [("hello, world", "greet"), ("multi\nline", "x")]
    assert [d.id for d in c] == ["t.csv:2", "t.csv:4"]
    assert [pr.line for pr in c.problems] == [3, 6]
    assert "1 columns but the header has 2" in c.problems[0].message
    assert "3 columns" in c.problems[1].message


def test_csv_missing_text_column_is_one_problem(tmp_path):
    c = load_path(write(tmp_path / "t.csv", "body,topic\na,b\nc,d\ne,f\n"))
    assert len(c) == 0 and len(c.problems) == 1
    msg = c.problems[0].message
    assert "No 'text' column" in msg and "'body'" in msg and "'topic'" in msg
    assert "text field option" in msg


def test_tsv_and_semicolon_delimiters(tmp_path):
    c = load_path(write(tmp_path / "t.tsv", "label\ttext\nx\thas, commas; and more\n"))
    assert [(d.text, d.label) for d in c] == [("has, commas; and more", "x")] and not c.problems
    c = load_path(write(tmp_path / "s.csv", "\ufefftext;label\nbonjour, monde;fr\n"))
    assert [(d.text, d.label) for d in c] == [("bonjour, monde", "fr")] and not c.problems


def test_csv_non_string_free_and_empty_cells(tmp_path):
    c = load_path(write(tmp_path / "t.csv", "id,text,label\nr1,yes,\nr2,  ,x\n"))
    assert [(d.id, d.text, d.label) for d in c] == [("r1", "yes", None)]
    assert c.problems[0].line == 3 and "empty" in c.problems[0].message


# ---------------------------------------------------------------- corpora


def test_extend_and_load_paths_keep_ids_unique(tmp_path):
    a = write(tmp_path / "a" / "x.txt", "one")
    b = write(tmp_path / "b" / "x.txt", "two")
    c = load_paths([a, b, a])
    assert [d.id for d in c] == ["x.txt", "x.txt~2", "x.txt~3"]
    assert c.name == "x.txt and 2 more"
    merged = Corpus([], [])
    merged.extend(from_text("p"))
    merged.extend(from_text("q"))
    assert [d.id for d in merged] == ["pasted-1", "pasted-1~2"]


def test_demo_corpus_loads_cleanly():
    c = load_demo()
    assert not c.problems
    assert len(c.labels()) >= 6 and len(c) >= 600
    assert len({d.id for d in c}) == len(c)
    assert all(d.id.startswith(d.label + "-") for d in c)
    assert all(60 <= len(d.text) <= 600 for d in c)


def test_mixed_demo_is_the_large_corpus_beside_machine_text_outside_the_provenance_set():
    large, mixed = load_demo("demo-large"), load_demo("demo-mixed")
    machine = [d for d in mixed if d.label == "machine"]
    assert not mixed.problems and len(machine) == 1200
    assert [d.id for d in mixed][:len(large)] == [d.id for d in large]
    assert len(mixed) == len(large) + len(machine) and len({d.id for d in mixed}) == len(mixed)
    # continued from other fortunes than the provenance set's human texts
    rows = [json.loads(line) for line in (resources_dir() / "demo" / "machine-large.jsonl").open()]
    text_of = {d.id: " ".join(d.text.split()) for d in large}
    provenance = load_demo("demo-provenance")
    human = {d.text for d in provenance if d.label == "human"}
    assert all(text_of[r["source"]].startswith(r["prompt"]) for r in rows)
    assert not human & {text_of[r["source"]] for r in rows}
    assert not {d.text for d in provenance} & {d.text for d in machine}


def test_machine_text_builder_leaves_out_the_sources_a_first_file_continued():
    """build_provenance.py --skip-sources: a second machine-only file continues other texts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_provenance",
                                                  resources_dir() / "demo" / "build_provenance.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    source = resources_dir() / "demo" / "fortunes-large.jsonl"
    first = builder.choose(50, source)
    second = builder.choose(50, source, skip_ids=frozenset(item["source"] for item in first))
    assert len(second) == 50 and not {i["source"] for i in first} & {i["source"] for i in second}
    assert builder.choose(50, source) == first  # without the option: the same texts as before


# ---------------------------------------------------------------- properties

FAST = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(corpus):
    assert isinstance(corpus, Corpus)
    assert all(isinstance(d.text, str) and d.text.strip() for d in corpus)
    assert len({d.id for d in corpus}) == len(corpus)
    assert all(p.message for p in corpus.problems)


@FAST
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".tsv"]))
def test_random_bytes_never_raise(tmp_path, data, suffix):
    check(load_path(write(tmp_path / f"f{suffix}", data)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
jsonl_lines = st.one_of(
    st.text(max_size=40),  # garbage
    st.builds(json.dumps, json_values),  # valid JSON, maybe not an object
    st.builds(
        json.dumps,
        st.fixed_dictionaries(
            {"text": st.one_of(st.text(max_size=40), json_values)},
            optional={"label": json_values, "id": json_values},
        ),
    ),
)


@FAST
@given(lines=st.lists(jsonl_lines, max_size=15))
def test_random_jsonl_lines_never_raise(tmp_path, lines):
    c = load_path(write(tmp_path / "d.jsonl", "\n".join(lines)))
    check(c)
    assert all(d.label is None or isinstance(d.label, str) for d in c)
