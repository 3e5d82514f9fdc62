import json
import subprocess
import sys
from pathlib import Path

from core.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_extract_writes_cache(tiny_model_dir, tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"love is kind {i}", "label": "a"}) for i in range(9))
                      + "\n{broken\n")
    out = tmp_path / "cache"
    rc = main(["extract", str(corpus), "--out", str(out), "--model", str(tiny_model_dir),
               "--layer", "2", "--mode", "tokens"])
    err = capsys.readouterr()
    assert rc == 0, err.err
    assert "docs.jsonl:10" in err.err  # the malformed line is reported, the rest still extracted
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_documents"] == 9 and manifest["hook"] == "resid_post.2"
    assert "wrote" in err.out
    # Running it again is a no-op resume of a complete cache.
    assert main(["extract", str(corpus), "--out", str(out), "--model", str(tiny_model_dir),
                 "--layer", "2", "--mode", "tokens"]) == 0


def test_extract_bad_input_is_a_message_not_a_traceback(tiny_model_dir, tmp_path, capsys):
    rc = main(["extract", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "c"),
               "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "missing.txt" in err and "Traceback" not in err
    doc = tmp_path / "a.txt"
    doc.write_text("hello there")
    rc = main(["extract", str(doc), "--out", str(tmp_path / "c"), "--model", str(tiny_model_dir),
               "--layer", "99"])
    err = capsys.readouterr().err
    assert rc == 2 and "Layer 99 does not exist" in err
    rc = main(["extract", str(doc), "--out", str(tmp_path / "c"), "--model", str(tmp_path)])
    assert rc == 2 and "config.json" in capsys.readouterr().err


def test_core_never_imports_qt():
    """core/ must stay usable headless and on clusters: no Qt, no gui imports, static or at run time."""
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                    name in stripped for name in ("PySide", "PyQt", "pyqtgraph", "shiboken", "gui")):
                if "gui.app" in stripped and path.name == "cli.py":
                    continue  # the CLI's no-argument path launches the GUI lazily
                offenders.append(f"{path.name}:{n}: {stripped}")
    assert not offenders
    code = ("import sys, pkgutil, importlib, core\n"
            "for m in pkgutil.iter_modules(core.__path__):\n"
            "    if m.name != '__main__': importlib.import_module('core.' + m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'gui')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
