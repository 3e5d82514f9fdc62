"""Build quadruples.jsonl from the word pairs below: every two pairs (x1, y1), (x2, y2) of one
function class give the quadruple x1 : y1 :: x2 : y2 (i < j, so 8 pairs give 28 quadruples).

    python resources/analogies/build_quadruples.py

The pairs are common English words chosen for this project (see README.md).
"""

import itertools
import json
from pathlib import Path

PAIRS = {
    "gender": [("man", "woman"), ("king", "queen"), ("boy", "girl"), ("father", "mother"),
               ("brother", "sister"), ("son", "daughter"), ("uncle", "aunt"), ("husband", "wife")],
    "capital": [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
                ("Spain", "Madrid"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens")],
    "comparative": [("small", "smaller"), ("big", "bigger"), ("fast", "faster"), ("old", "older"),
                    ("tall", "taller"), ("cold", "colder"), ("strong", "stronger"), ("young", "younger")],
    "past-tense": [("walk", "walked"), ("go", "went"), ("see", "saw"), ("eat", "ate"),
                   ("play", "played"), ("write", "wrote"), ("take", "took"), ("run", "ran")],
    "plural": [("cat", "cats"), ("dog", "dogs"), ("child", "children"), ("house", "houses"),
               ("car", "cars"), ("book", "books"), ("mouse", "mice"), ("tree", "trees")],
    "antonym": [("hot", "cold"), ("up", "down"), ("good", "bad"), ("open", "closed"),
                ("happy", "sad"), ("light", "dark"), ("early", "late"), ("rich", "poor")],
}


def main() -> None:
    out = Path(__file__).with_name("quadruples.jsonl")
    lines = []
    for function, pairs in PAIRS.items():
        for (a, b), (c, d) in itertools.combinations(pairs, 2):
            lines.append(json.dumps({"class": function, "a": a, "b": b, "c": c, "d": d}))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} quadruples in {len(PAIRS)} classes to {out}")


if __name__ == "__main__":
    main()
