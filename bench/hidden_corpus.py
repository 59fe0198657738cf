"""Precision and recall of the hidden-instruction detector on the repo's two corpora.

    python bench/hidden_corpus.py [-v]

tests/corpus/real_servers.json: real servers' published lists (benign). tests/corpus/poisoning.json:
attacks in the published tool-poisoning styles, and hard negatives (benign). Each entry (one tool,
prompt, resource or template) is judged as the gateway judges it (`detect.assess.judge`):
"hold" (quarantined at first sight), "flag" (inventory finding only) or nothing. Printed: hold and
flag-or-hold precision/recall, false holds and flags on the benign sets, and per attack style.
`-v` lists every benign entry flagged and every attack missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extauthz.detect.assess import descriptions, judge  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"


@dataclass(frozen=True, slots=True)
class Judged:
    id: str
    group: str          # real | hard-negative | attack
    style: str
    verdict: str        # hold | flag | none
    flags: tuple[str, ...]
    why: str | None
    texts: int


def load() -> list[Judged]:
    real = json.loads((CORPUS / "real_servers.json").read_text())
    poison = json.loads((CORPUS / "poisoning.json").read_text())
    rows = [("real", f"{e['source']} {e['kind']} {e['name']}", e["source"].rsplit("@", 1)[0], e["raw"])
            for e in real["entries"]]
    rows += [("hard-negative", e["id"], e["style"], e["raw"]) for e in poison["hard_negatives"]]
    rows += [("attack", e["id"], e["style"], e["raw"]) for e in poison["attacks"]]
    out = []
    for group, ident, style, raw in rows:
        flags, why = judge(raw)
        out.append(Judged(ident, group, style, "hold" if why else "flag" if flags else "none", tuple(flags), why,
                          sum(1 for _ in descriptions(raw))))
    return out


def _pr(tp: int, fp: int, fn: int) -> str:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return f"precision {p:.3f} ({tp}/{tp + fp})  recall {r:.3f} ({tp}/{tp + fn})"


def report(judged: list[Judged], verbose: bool = False) -> dict[str, Any]:
    by = defaultdict(list)
    for j in judged:
        by[j.group].append(j)
    attacks, benign = by["attack"], by["real"] + by["hard-negative"]
    real_sources = Counter(j.style for j in by["real"])
    print(f"real-server corpus: {len(by['real'])} entries, {sum(j.texts for j in by['real'])} description texts, "
          f"{len(real_sources)} sources")
    print(f"poisoning corpus: {len(attacks)} attacks in {len({j.style for j in attacks})} styles, "
          f"{len(by['hard-negative'])} hard negatives")
    figures: dict[str, Any] = {}
    for name, hit in (("hold", {"hold"}), ("flag or hold", {"hold", "flag"})):
        tp = sum(j.verdict in hit for j in attacks)
        fp = sum(j.verdict in hit for j in benign)
        print(f"{name:>13}: {_pr(tp, fp, len(attacks) - tp)}")
        figures[name] = (tp, fp)
    for group in ("real", "hard-negative"):
        c = Counter(j.verdict for j in by[group])
        print(f"{group:>13}: held {c['hold']}, flagged {c['flag']}, clean {c['none']} of {len(by[group])}")
    print("attack styles (held/flagged/missed):")
    for style in sorted({j.style for j in attacks}):
        c = Counter(j.verdict for j in attacks if j.style == style)
        print(f"  {style:<20} {c['hold']}/{c['flag']}/{c['none']}")
    if verbose:
        for j in benign:
            if j.verdict != "none":
                print(f"BENIGN {j.verdict.upper()} {j.id}: {j.why or '; '.join(j.flags)}")
        for j in attacks:
            if j.verdict != "hold":
                print(f"ATTACK {j.verdict.upper()} {j.id}: {'; '.join(j.flags) or '-'}")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    report(load(), ap.parse_args().verbose)


if __name__ == "__main__":
    main()
