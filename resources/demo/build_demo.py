#!/usr/bin/env python3
"""Rebuild the demo corpus from Debian's `fortunes` package.

    apt-get install -y fortunes
    python3 resources/demo/build_demo.py
    python3 resources/demo/build_demo.py --training-corpus OUT.jsonl

Writes fortunes.jsonl (fields id, text, label) and sample.txt beside this script. Plain python3,
no dependencies. Deterministic: the same package version gives byte-identical output.
With --training-corpus it writes instead every prose entry of the broader TRAINING_CATEGORIES
to OUT.jsonl: the larger corpus the starter dictionary was trained on (not shipped).
"""

import json
import random
import re
import sys
from pathlib import Path

SOURCE = Path("/usr/share/games/fortunes")
OUT = Path(__file__).resolve().parent
# Clearly distinct topics with enough entries; the offensive sets in off/ are never used.
CATEGORIES = ["art", "computers", "food", "law", "love", "politics", "science", "sports"]
# The starter dictionary's training text: every regular collection but ASCII art, jokes about
# groups of people, and the untranslated one.
TRAINING_CATEGORIES = [
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "education", "food",
    "fortunes", "goedel", "humorists", "knghtbrd", "law", "linux", "linuxcookie", "literature",
    "love", "magic", "medicine", "miscellaneous", "news", "paradoxum", "people", "perl", "pets",
    "platitudes", "politics", "pratchett", "riddles", "science", "songs-poems", "sports",
    "startrek", "tao", "wisdom", "work", "zippy"]
PER_CATEGORY = 120
MIN_CHARS, MAX_CHARS = 60, 600
SEED = 20240601
# A public-domain letter (Duke of Wellington, 1812), several paragraphs long.
SAMPLE = ("politics", "Gentlemen,\n\tWhilst marching from Portugal")


def read_entries(category: str) -> list[str]:
    raw = (SOURCE / category).read_text(encoding="utf-8", errors="replace")
    raw = re.sub(r".\x08", "", raw)  # drop overstrike sequences ("_\bA" underlines A)
    entries = re.split(r"^%\n", raw, flags=re.MULTILINE)
    return [clean(e) for e in entries if e.strip()]


def clean(entry: str) -> str:
    # Trailing blanks go; tabs stay as the authors wrote them.
    lines = [line.rstrip() for line in entry.splitlines()]
    return "\n".join(lines).strip("\n")


def looks_like_prose(text: str) -> bool:
    """Skip ASCII art, tables and mostly-blank entries: keep text that is mostly letters."""
    non_space = [c for c in text if not c.isspace()]
    if not non_space or len(non_space) < 0.6 * len(text):
        return False
    letters = sum(c.isalpha() for c in non_space)
    return letters >= 0.7 * len(non_space)


def key(text: str) -> str:
    return " ".join(text.lower().split())


def write_training_corpus(out: Path) -> int:
    rows, keys = [], set()
    for cat in TRAINING_CATEGORIES:
        for n, text in enumerate(read_entries(cat)):
            k = key(text)
            if len(text) >= 20 and looks_like_prose(text) and k not in keys:
                keys.add(k)
                rows.append({"id": f"{cat}-{n:05d}", "text": text, "label": cat})
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(rows)} documents from {len(TRAINING_CATEGORIES)} collections ({out.stat().st_size} bytes)")
    return 0


def main() -> int:
    if not SOURCE.is_dir():
        print(f"{SOURCE} not found. Install it with: apt-get install -y fortunes", file=sys.stderr)
        return 1
    if sys.argv[1:2] == ["--training-corpus"] and len(sys.argv) == 3:
        return write_training_corpus(Path(sys.argv[2]))

    candidates = {}
    seen_in: dict[str, set[str]] = {}
    for cat in CATEGORIES:
        kept, keys = [], set()
        for text in read_entries(cat):
            k = key(text)
            if MIN_CHARS <= len(text) <= MAX_CHARS and looks_like_prose(text) and k not in keys:
                keys.add(k)
                kept.append(text)
                seen_in.setdefault(k, set()).add(cat)
        candidates[cat] = kept

    rows = []
    counts = {}
    for cat in CATEGORIES:
        # An entry filed under two categories has no single true label: leave it out.
        pool = [t for t in candidates[cat] if len(seen_in[key(t)]) == 1]
        rng = random.Random(f"{SEED}-{cat}")  # str seeds hash deterministically
        picked = sorted(rng.sample(range(len(pool)), min(PER_CATEGORY, len(pool))))
        for n, i in enumerate(picked):
            rows.append({"id": f"{cat}-{n:04d}", "text": pool[i], "label": cat})
        counts[cat] = len(picked)

    with open(OUT / "fortunes.jsonl", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    cat, prefix = SAMPLE
    sample = next(e for e in read_entries(cat) if e.startswith(prefix))
    (OUT / "sample.txt").write_text(sample + "\n", encoding="utf-8", newline="\n")

    for cat, n in counts.items():
        print(f"{cat:10s} {n}")
    print(f"total      {len(rows)}  ({(OUT / 'fortunes.jsonl').stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
