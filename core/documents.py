"""Load documents from pasted text, files and folders into a Corpus.

Bad input never raises: every bad thing (an empty file, a binary file, a malformed JSONL line,
a CSV row with the wrong number of columns, ...) becomes a `Problem` that says what is wrong and
what to do, and the good documents beside it still load. Only a path that does not exist raises
`DocumentError`, because then there is nothing to report problems about.

Formats: .txt .md .markdown (the whole file is one document), .jsonl (one JSON object per line),
.csv .tsv (a header row, then one document per row). Folders are read recursively in sorted
order, skipping hidden files and folders; a .txt/.md file in a subfolder is labeled with that
subfolder's path relative to the folder that was opened.

Encoding policy: UTF-8 (with or without a BOM), or UTF-16/32 when the file starts with their BOM.
Anything else is decoded as UTF-8 with undecodable bytes replaced by U+FFFD, and a Problem names
the first bad line, so the document still loads and the user learns to re-save it as UTF-8. We
do not guess cp1252/latin-1: a wrong guess would silently change text the model then sees.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from core.errors import DocumentError
from core.paths import resources_dir

MAX_FILE_BYTES = 20 * 1024 * 1024
TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}
TABLE_SUFFIXES = {".csv", ".tsv"}
SUPPORTED = " ".join(sorted(TEXT_SUFFIXES | JSONL_SUFFIXES | TABLE_SUFFIXES))
ID_FIELD = "id"
# One broken file must not bury everything else: past this many, problems are summarised.
MAX_PROBLEMS_PER_FILE = 20
# Characters a text file may hold in bulk: tab, newline, carriage return, form feed,
# backspace (old overstrike) and escape (terminal colours).
_ALLOWED_CONTROLS = set("\t\n\r\f\b\x1b")
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: the UTF-32 LE BOM starts like UTF-16's
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


@dataclass(frozen=True)
class Document:
    id: str  # unique within a corpus
    text: str
    source: str  # file path, "path:line" for a JSONL/CSV row, or "pasted"
    label: str | None = None


@dataclass(frozen=True)
class Problem:
    source: str  # file path (or "pasted")
    line: int | None  # 1-based line number where relevant
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


@dataclass
class Corpus:
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    name: str = ""

    def labels(self) -> list[str]:
        """Sorted distinct labels, ignoring unlabeled documents."""
        return sorted({d.label for d in self.documents if d.label is not None})

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self):
        return iter(self.documents)

    def extend(self, other: Corpus) -> None:
        """Append another corpus; a clashing id gets a suffix ("a.txt" -> "a.txt~2")."""
        taken = {d.id for d in self.documents}
        for doc in other.documents:
            self.documents.append(_with_unique_id(doc, taken))
        self.problems.extend(other.problems)


def _with_unique_id(doc: Document, taken: set[str]) -> Document:
    new_id, n = doc.id, 1
    while new_id in taken:
        n += 1
        new_id = f"{doc.id}~{n}"
    taken.add(new_id)
    return doc if new_id == doc.id else replace(doc, id=new_id)


# ---------------------------------------------------------------- public entry points


def snippet(text: str, n: int = 160) -> str:
    """The text on one line, cut to n characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def from_text(text: str, label: str | None = None, id: str | None = None) -> Corpus:
    """A corpus of one pasted document; empty or whitespace-only text gives a Problem instead."""
    if not text or not text.strip():
        problem = Problem("pasted", None, "The pasted text is empty. Paste or type some text.")
        return Corpus([], [problem], name="pasted")
    return Corpus([Document(id or "pasted-1", text, "pasted", label)], [], name="pasted")


def load_path(
    path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    max_bytes: int = MAX_FILE_BYTES,
) -> Corpus:
    """Load one file or a folder (recursively). Raises DocumentError only if `path` is missing."""
    path = Path(path)
    if not path.exists():
        raise DocumentError(
            f"{path} does not exist.", "Check the path, or choose another file or folder."
        )
    opts = {"text_field": text_field, "label_field": label_field, "max_bytes": max_bytes}
    if path.is_dir():
        corpus = _load_folder(path, **opts)
    else:
        corpus = _load_file(path, path.name, None, **opts)
    corpus.name = path.name or str(path)
    return corpus


def load_paths(paths, **kw) -> Corpus:
    """Load many files/folders into one corpus. Every path is checked before any is read."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DocumentError(
            f"Not found: {', '.join(missing)}.", "Check the paths, or remove them from the list."
        )
    corpus = Corpus()
    for p in paths:
        corpus.extend(load_path(p, **kw))
    names = [p.name or str(p) for p in paths]
    corpus.name = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
    return corpus


# The bundled demo sets (resources/demo/README.md): name -> (file or files, display name).
DEMO_SETS = {
    "demo": ("fortunes.jsonl", "demo (fortunes)"),
    "demo-provenance": ("provenance.jsonl", "provenance demo (human vs machine)"),
    "demo-ood": ("ood.jsonl", "out-of-distribution demo (stdlib docstrings)"),
    "demo-large": ("fortunes-large.jsonl", "large demo (13,698 fortunes, 37 collections)"),
    "demo-mixed": (("fortunes-large.jsonl", "machine-large.jsonl"),
                   "large demo with machine text (13,698 fortunes, 1,200 teacher continuations)"),
}
DEMO_NAMES = ", ".join(DEMO_SETS)  # for help texts


def load_demo(name: str = "demo") -> Corpus:
    """A bundled demo set: "demo" (labeled short texts from Debian's fortunes), "demo-provenance"
    (those texts beside continuations the bundled teacher wrote from their opening words),
    "demo-ood" (Python standard-library docstrings, unlike fortunes), "demo-large" (every
    prose fortune of 37 collections, labeled by collection: the starter dictionary's training
    text) or "demo-mixed" (demo-large beside 1,200 continuations the teacher wrote from openings
    of other fortunes than the provenance set's, as RAID mixes human and machine text: the demo
    student's training text)."""
    if name not in DEMO_SETS:
        raise DocumentError(f"There is no demo set called '{name}'.", f"Use one of {', '.join(DEMO_SETS)}.")
    files, title = DEMO_SETS[name]
    files = (files,) if isinstance(files, str) else files
    corpus = load_paths([resources_dir() / "demo" / f for f in files])
    corpus.name = title
    return corpus


def load_corpus(inputs: Sequence[str], **kw) -> Corpus:
    """What a corpus argument names: one bundled demo set by name (DEMO_SETS), or files and
    folders (`load_paths`, with its options)."""
    inputs = [str(i) for i in inputs]
    if len(inputs) == 1 and inputs[0] in DEMO_SETS:
        return load_demo(inputs[0])
    return load_paths(inputs, **kw)


# ---------------------------------------------------------------- folders and files


def _load_folder(root: Path, **opts) -> Corpus:
    corpus = Corpus()

    def walk_error(err: OSError) -> None:
        corpus.problems.append(
            Problem(
                str(err.filename or root),
                None,
                f"Cannot open this folder ({err.strerror}); "
                "check its permissions. Its files were skipped.",
            )
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        rel_folder = folder.relative_to(root).as_posix()
        label = None if rel_folder == "." else rel_folder
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = folder / name
            rel = path.relative_to(root).as_posix()
            corpus.extend(_load_file(path, rel, label, **opts))

    if not corpus.documents and not corpus.problems:
        corpus.problems.append(
            Problem(
                str(root),
                None,
                f"No documents found in this folder. Add files of a supported type ({SUPPORTED}).",
            )
        )
    return corpus


def _load_file(path: Path, rel: str, folder_label, *, text_field, label_field, max_bytes) -> Corpus:
    """Load one file. `rel` names it in ids; `folder_label` labels .txt/.md documents."""
    src = str(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES | JSONL_SUFFIXES | TABLE_SUFFIXES:
        what = f"'{path.suffix}'" if path.suffix else "without an extension"
        return _problem(
            src,
            None,
            f"Skipped: file type {what} is not supported. Convert it to one of {SUPPORTED}.",
        )

    text, problems = _read_text(path, max_bytes)
    if text is None:
        return Corpus([], problems)

    if not text.strip():
        problems.append(
            Problem(src, None, "The file holds only whitespace; add some text or remove it.")
        )
        return Corpus([], problems)

    if suffix in TEXT_SUFFIXES:
        # Windows line endings would otherwise reach the tokenizer as stray "\r".
        text = text.replace("\r\n", "\n")
        return Corpus([Document(rel, text, src, folder_label)], problems)

    if suffix in JSONL_SUFFIXES:
        corpus = _parse_jsonl(text, src, rel, text_field, label_field)
    else:
        corpus = _parse_table(text, src, rel, suffix, text_field, label_field)
    corpus.problems[:0] = problems
    _cap_problems(corpus, src)
    return corpus


def _problem(src: str, line: int | None, message: str) -> Corpus:
    return Corpus([], [Problem(src, line, message)])


def _cap_problems(corpus: Corpus, src: str) -> None:
    extra = len(corpus.problems) - MAX_PROBLEMS_PER_FILE
    if extra > 0:
        del corpus.problems[MAX_PROBLEMS_PER_FILE:]
        corpus.problems.append(
            Problem(
                src,
                None,
                f"... and {extra} more problems in this file, not listed. "
                "Fix the ones above (they are often all the same) and load it again.",
            )
        )


def _read_text(path: Path, max_bytes: int) -> tuple[str | None, list[Problem]]:
    """Read and decode a file, or return (None, [why not]). Never reads past max_bytes."""
    src = str(path)
    try:
        st = path.stat()  # size first: a huge (or sparse) file must cost nothing
        if not stat.S_ISREG(st.st_mode):
            return None, [
                Problem(
                    src,
                    None,
                    "Skipped: not a regular file (a pipe, socket or "
                    "device). Copy its contents into a file first.",
                )
            ]
        if st.st_size > max_bytes:
            return None, [_too_big(src, st.st_size, max_bytes)]
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as err:
        return None, [
            Problem(
                src,
                None,
                f"Cannot read this file ({err.strerror or err}); "
                "check that it exists and that you may read it.",
            )
        ]
    if len(data) > max_bytes:
        return None, [_too_big(src, len(data), max_bytes)]
    if not data:
        return None, [Problem(src, None, "The file is empty; add some text or remove it.")]

    text, problems = _decode(data, src)
    if text is None or _looks_binary(text):
        return None, [
            Problem(
                src,
                None,
                "Skipped: this looks like a binary file, not text "
                "(or text in an encoding other than UTF-8). Export it as "
                f"UTF-8 text ({SUPPORTED}).",
            )
        ]
    return text, problems


def _too_big(src: str, size: int, max_bytes: int) -> Problem:
    return Problem(
        src,
        None,
        f"Skipped: the file is {_human(size)}, over the {_human(max_bytes)} "
        "limit for one file. Split it into smaller files.",
    )


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _decode(data: bytes, src: str) -> tuple[str | None, list[Problem]]:
    """Decode per the module's encoding policy; (None, []) if a BOM'd file does not decode."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), []
            except UnicodeDecodeError:
                return None, []
    try:
        return data.decode("utf-8-sig"), []  # also plain UTF-8: the BOM is optional
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        text = data.decode("utf-8-sig", errors="replace")
        return text, [
            Problem(
                src,
                line,
                "The file is not valid UTF-8 (first bad byte on this "
                "line); undecodable bytes were replaced by \ufffd. Re-save the "
                "file as UTF-8 to keep those characters.",
            )
        ]


def _looks_binary(text: str) -> bool:
    """NUL anywhere, or more than 10% control/undecodable characters near the start."""
    if "\x00" in text:
        return True
    sample = text[:8192]
    odd = sum(
        1
        for c in sample
        if c == "\ufffd" or (c < " " and c not in _ALLOWED_CONTROLS) or c == "\x7f"
    )
    return odd > 0.1 * len(sample)


# ---------------------------------------------------------------- JSONL and CSV rows


class _Rows:
    """Collects row documents of one file: ids from the id field when unique, else name:line."""

    def __init__(self, src: str, rel: str):
        self.src, self.rel = src, rel
        self.corpus = Corpus()
        self.taken: set[str] = set()

    def problem(self, line: int, message: str) -> None:
        self.corpus.problems.append(Problem(self.src, line, message))

    def add(self, line: int, text, label, given_id, text_field: str) -> None:
        if not isinstance(text, str):
            self.problem(
                line,
                f"The '{text_field}' field is {_kind(text)}, not a string; "
                "this row was skipped. Store the document text as a string.",
            )
            return
        if not text.strip():
            self.problem(line, f"The '{text_field}' field is empty; this row was skipped.")
            return
        if label is not None:
            label = label if isinstance(label, str) else str(label)
            label = label if label.strip() else None
        doc_id = f"{self.rel}:{line}"
        if isinstance(given_id, (str, int)) and not isinstance(given_id, bool):
            given_id = str(given_id)
            if given_id.strip() and given_id not in self.taken:
                doc_id = given_id
            elif given_id.strip():
                self.problem(
                    line,
                    f"The id '{given_id}' is used by an earlier row; this "
                    f"document gets the id '{doc_id}' instead. Make ids unique.",
                )
        doc = Document(doc_id, text, f"{self.src}:{line}", label)
        self.corpus.documents.append(_with_unique_id(doc, self.taken))


def _kind(value) -> str:
    if value is None:
        return "null"
    names = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def _parse_jsonl(text: str, src: str, rel: str, text_field: str, label_field: str) -> Corpus:
    rows = _Rows(src, rel)
    # Split on "\n" only: str.splitlines() would also break at U+2028 and other characters
    # that JSON allows unescaped inside strings.
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue  # blank lines (often a trailing one) are harmless
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as err:
            detail = ""
            if isinstance(err, json.JSONDecodeError):
                detail = f" ({err.msg}, column {err.colno})"
            rows.problem(
                n,
                f"This line is not valid JSON{detail}; it was skipped. "
                "Each line must hold one JSON object.",
            )
            continue
        if not isinstance(obj, dict):
            rows.problem(
                n,
                f'Expected a JSON object like {{"{text_field}": "..."}}, found '
                f"{_kind(obj)}; this line was skipped.",
            )
            continue
        if text_field not in obj:
            present = ", ".join(f"'{k}'" for k in obj) or "none"
            rows.problem(
                n,
                f"No '{text_field}' field; fields present: {present}. Set the text "
                "field option to the field that holds the document text.",
            )
            continue
        rows.add(n, obj[text_field], obj.get(label_field), obj.get(ID_FIELD), text_field)
    return rows.corpus


def _parse_table(text, src, rel, suffix, text_field, label_field) -> Corpus:
    rows = _Rows(src, rel)
    header_line = next((ln for ln in text.split("\n") if ln.strip()), "")
    delimiter = _pick_delimiter(header_line, suffix, text_field)
    # csv's default field limit (128 KB) is below our file limit; raising it is harmless.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    header, start = None, 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1  # a quoted field may span lines
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [h.strip() for h in row]
                if text_field not in header:
                    cols = ", ".join(f"'{h}'" for h in header)
                    rows.problem(
                        line,
                        f"No '{text_field}' column; the header row (which must "
                        f"come first) names: {cols}. Set the text field option to "
                        "the column that holds the document text.",
                    )
                    return rows.corpus
                continue
            if len(row) != len(header):
                rows.problem(
                    line,
                    f"This row has {len(row)} columns but the header has "
                    f"{len(header)}; it was skipped. Put fields that contain "
                    f"'{_show(delimiter)}', quotes or line breaks in double quotes.",
                )
                continue
            record = dict(zip(header, row))
            rows.add(
                line, record[text_field], record.get(label_field), record.get(ID_FIELD), text_field
            )
    except csv.Error as err:
        rows.problem(
            start,
            f"Cannot parse this row ({err}); the rest of the file was skipped. Check its quoting.",
        )
    if header is None:
        rows.problem(
            1,
            "The file has no header row; its first row must name the columns, "
            f"one of them '{text_field}'.",
        )
    return rows.corpus


def _pick_delimiter(header_line: str, suffix: str, text_field: str) -> str:
    """Tab for .tsv, else the delimiter whose split of the header names the text column."""
    candidates = ["\t", ",", ";", "|"] if suffix == ".tsv" else [",", "\t", ";", "|"]
    for d in candidates:
        try:
            cells = next(csv.reader([header_line], delimiter=d), [])
        except csv.Error:
            continue
        if text_field in (c.strip() for c in cells):
            return d
    return candidates[0]


def _show(delimiter: str) -> str:
    return {"\t": "\\t"}.get(delimiter, delimiter)
