#!/usr/bin/env python3
"""Build the out-of-distribution demo corpus: docstrings of the Python standard library.

    python3 resources/demo/build_ood.py

Technical reference prose is about as far from fortunes (quips, one-liners, letters) as text
that is on every machine gets, which is what the agreement table's out-of-distribution row
needs: a student distilled on fortunes is compared with its teacher on text it never saw.

The docstrings are read from the standard library's source with `ast` (no module is imported,
so nothing runs), cleaned as `inspect.cleandoc` does, and kept when 30 to 300 words long. Each
document is labeled by the topic of its module (TOPICS below), so the corpus also works for a
contrast. Plain python3, no dependencies; deterministic for a given Python version (docstrings
change a little between versions: the version used is in ood.settings.json).
"""

import ast
import json
import random
import sys
import sysconfig
from pathlib import Path

OUT = Path(__file__).resolve().parent / "ood.jsonl"
SEED = 20240608
PER_TOPIC = 60
MIN_WORDS, MAX_WORDS = 30, 300
# Module (file or package folder under the stdlib) -> topic label. Pure-Python modules present
# in every CPython 3.9+ build.
TOPICS = {
    "text": ["string", "textwrap", "difflib", "re", "gettext", "locale", "codecs", "unicodedata",
             "html", "stringprep"],
    "files": ["os", "pathlib", "shutil", "tarfile", "zipfile", "glob", "fnmatch", "tempfile",
              "filecmp", "fileinput", "io", "_pyio"],
    "network": ["http", "urllib", "smtplib", "ftplib", "socket", "socketserver", "ssl", "email",
                "mailbox", "ipaddress", "imaplib", "poplib"],
    "data": ["json", "csv", "pickle", "sqlite3", "configparser", "plistlib", "shelve", "dbm",
             "base64", "struct", "copyreg", "xml"],
    "concurrency": ["threading", "asyncio", "multiprocessing", "subprocess", "concurrent", "queue",
                    "sched", "selectors", "signal"],
    "numbers": ["decimal", "_pydecimal", "fractions", "statistics", "random", "numbers", "math",
                "cmath", "heapq", "bisect"],
}


def python_files(stdlib: Path, module: str) -> list[Path]:
    if (stdlib / module).is_dir():
        return sorted(p for p in (stdlib / module).rglob("*.py")
                      if not {"test", "tests"} & set(p.relative_to(stdlib).parts))
    path = stdlib / f"{module}.py"
    return [path] if path.is_file() else []


def docstrings(path: Path):
    """(qualified name, cleaned docstring) of the module, its classes and its functions."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    stack = [("", tree)]
    while stack:
        prefix, node = stack.pop(0)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            name = prefix if isinstance(node, ast.Module) else f"{prefix}.{node.name}".lstrip(".")
            if doc:
                yield name or "<module>", doc
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    stack.append((name if not isinstance(node, ast.Module) else "", child))


def main() -> int:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rows, seen, counts = [], set(), {}
    for topic, modules in TOPICS.items():
        pool = []
        for module in modules:
            for path in python_files(stdlib, module):
                rel = path.relative_to(stdlib).with_suffix("").as_posix().replace("/", ".")
                for name, doc in docstrings(path):
                    key = " ".join(doc.lower().split())
                    if MIN_WORDS <= len(doc.split()) <= MAX_WORDS and key not in seen:
                        seen.add(key)  # decimal and _pydecimal, io and _pyio share docstrings
                        pool.append((f"{rel}:{name}", doc))
        rng = random.Random(f"{SEED}-{topic}")
        picked = sorted(rng.sample(range(len(pool)), min(PER_TOPIC, len(pool))))
        for n, i in enumerate(picked):
            where, doc = pool[i]
            rows.append({"id": f"{topic}-{n:04d}", "text": doc, "label": topic, "where": where})
        counts[topic] = len(picked)

    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    settings = {"command": "python3 resources/demo/build_ood.py", "python": sys.version.split()[0],
                "stdlib": "sysconfig.get_paths()['stdlib']", "seed": SEED, "per_topic": PER_TOPIC,
                "words": [MIN_WORDS, MAX_WORDS], "topics": TOPICS, "counts": counts}
    OUT.with_name("ood.settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    for topic, n in counts.items():
        print(f"{topic:12s} {n}")
    print(f"total        {len(rows)}  ({OUT.stat().st_size} bytes, Python {settings['python']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
