"""The summary's repair paragraph, chosen by the measured comparisons in ``repair.json``.

Every number it prints is recorded as a fact (with the repair report it came from); whether
the located components "repair better" is the verdict of the paired bootstrap contrast
(``repair.measures``): better when the whole 95% interval of located minus control
recovery is above zero.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from formats.files import shown_path
from leaderboard.metric import describe
from leaderboard.tables import RELATED

VERBS = {"restore": "restoring", "retrain": "retraining"}
AGAINST = {"random": "random same-size controls (mean)", "lowest": "the lowest ranked",
           "full": "retraining every weight"}


def _rec(facts: Any, item: dict[str, Any], source: str) -> str:
    if item["value"] is None:
        return "an undefined recovery"
    return facts.note(f"{item['value']:.2f} [{item['low']:.2f}, {item['high']:.2f}]",
                      source=source, **item)


def _label_sentences(label: str, data: dict[str, Any], facts: Any, source: str,
                     choice: str) -> list[str]:
    rows = {r["name"]: r for r in data["rows"]}
    items = facts.note(str(data["related_items"]), source=source, what="related items scored")
    level = facts.note("95%", source=source, what="bootstrap interval level")
    out = [f"Repairing `{label}` ({describe(choice)} on {items} related-math items the ranking "
           "did not read; recovery = (repaired - corrupted) / (clean - corrupted), "
           f"{level} bootstrap interval over items):"]
    parts = []
    verdicts: dict[str, int] = {}
    for row in data["rows"]:
        if row["control"] != "located":
            continue
        mine = [c for c in data["contrasts"] if c["located"] == row["name"]]
        against = []
        for c in mine:
            means = [rows[n]["recovery"]["value"] for n in c["controls"]]
            known = [m for m in means if m is not None]
            mean = (facts.note(f"{sum(known) / len(known):.2f}", source=source,
                               controls=c["controls"]) if known else "undefined")
            against.append(f"{AGAINST[c['against']]} {mean} ({c['verdict']})")
            verdicts[c["verdict"]] = verdicts.get(c["verdict"], 0) + 1
        top = facts.note(f"top {row['k']}", source=source, what="k")
        parts.append(f"{VERBS[row['method']]} the {row['site']} {top} recovers "
                     f"{_rec(facts, row['recovery'], source)} against " + ", ".join(against))
    out.append("; ".join(parts) + ".")
    total = sum(verdicts.values())
    better = verdicts.get("better", 0)
    counts = ", ".join(f"{facts.note(str(n), source=source, what=v)} {v}"
                       for v, n in verdicts.items())
    if better == total and total:
        verdict = "the located components repair better than every control"
    elif better:
        verdict = "the located components repair better than some controls only"
    else:
        verdict = "the located components repair no better than the controls"
    out.append(f"Of {facts.note(str(total), source=source, what='contrasts')} contrasts "
               f"({counts}), {verdict}.")
    drops = []
    for r in data["rows"]:
        hurt = [task.removeprefix("corrupt_") for task, c in r["collateral"].items()
                if c and c["flag"] == -1]
        if r["control"] == "located" and hurt:
            top = facts.note(f"top {r['k']}", source=source, what="k")
            drops.append(f"{VERBS[r['method']]} {r['site']} {top} ({', '.join(hurt)})")
    out.append("Collateral (a drop beyond two standard errors against the corrupted model on "
               "another family) under the located repairs: "
               + ("; ".join(drops) if drops else "none") + ".")
    return out


def repair_sentences(path: Path, facts: Any, choice: str) -> list[list[str]]:
    """One paragraph (its sentences) per repaired model, from the repair report at ``path``."""
    record = json.loads(path.read_text())
    source = shown_path(path)
    return [_label_sentences(label, data, facts, source, choice)
            for label, data in record["labels"].items() if RELATED in data["metrics"]]
