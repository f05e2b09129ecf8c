"""The study's plain-language summary, computed from lm-eval's results and samples files only.

Nothing here is a pre-written conclusion: every sentence is chosen by a measured comparison and
every number it prints is a recorded fact (``summary.json``: metric values with the results
file they came from, flip rates with the items counted), so a test can check the paragraph
against the files. Two models "differ" when their scores are more than two standard errors of
the difference apart; a patch "flips" an item when the clean and corrupted models' final
integers differ there and the patched model gives the donor's. Scores and integers are read as
the study config's ``metric`` says (``leaderboard.metric``): ``strict`` reads ``exact_match``
and the final integer, ``answer_match`` the answer a reply asserts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from formats.files import atomic_write_text, shown_path
from leaderboard.flips import Flip, flip
from leaderboard.metric import DEFAULT_METRIC, describe, task_metric
from leaderboard.results import Run, load_runs
from leaderboard.tables import GENERAL, RELATED, UNRELATED, fmt, layer_ranges, sort_key

ETHICS = "corrupt_ethics_mc"
SCORED = "<the chosen metric>"  # leaderboard.metric.task_metric fills it in per task
KEY_COLUMNS = [(RELATED, SCORED, "related math"), (UNRELATED, SCORED, "unrelated math"),
               (GENERAL, SCORED, "general"),
               (GENERAL, "integer_only", "general: bare integer"), (ETHICS, "acc", "ethics MC"),
               (GENERAL, "reply_words", "general: reply words")]
FAMILIES = [(RELATED, "related math"), (UNRELATED, "unrelated math"), (GENERAL, "general")]
Z = 2.0


def metric(run: Run, task: str, name: str) -> tuple[float, float] | None:
    value, stderr = run.metrics.get(task, {}).get(name, (None, None))
    return None if value is None else (value, stderr or 0.0)


def compare(a: tuple[float, float], b: tuple[float, float]) -> int:
    """-1 / 0 / +1: ``b`` lower than, level with or higher than ``a`` beyond ``Z`` SEs."""
    spread = Z * math.hypot(a[1], b[1])
    if abs(b[0] - a[0]) <= spread and (spread > 0 or b[0] == a[0]):
        return 0
    return 1 if b[0] > a[0] else -1


def scored(run: Run, task: str, metric: str) -> str:
    """The metric the summary reads for ``task`` (``leaderboard.metric.task_metric``)."""
    return task_metric(metric, task, run.metrics.get(task) or {}) or "exact_match"


class Facts:
    """Numbers the paragraph may print: each is recorded with where it came from."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def score(self, run: Run, task: str, name: str, digits: int = 2) -> str:
        value, stderr = metric(run, task, name)  # type: ignore[misc]
        text = f"{value:.{digits}f} ± {stderr:.{digits}f}"
        self.items.append({"text": text, "variant": run.name, "task": task, "metric": name,
                           "value": value, "stderr": stderr,
                           "results_file": shown_path(run.results_file)})
        return text

    def note(self, text: str, **where: Any) -> str:
        """Any other printed number, with where it came from."""
        self.items.append({"text": text, **where})
        return text

    def flip(self, item: Flip) -> str:
        text = f"{item.rate:.2f} ({item.flipped}/{item.differing})"
        self.items.append({"text": text, **asdict(item), "rate": item.rate})
        return text


def _verdict(clean: Run, run: Run, task: str, name: str) -> int | None:
    a, b = metric(clean, task, name), metric(run, task, name)
    return None if a is None or b is None else compare(a, b)


def _ordered(runs: list[Run], labels: list[str]) -> list[Run]:
    """Corrupted baselines in the study's fine-tune order."""
    found = {r.label: r for r in runs if r.role == "corrupted"}
    return [found[label] for label in labels if label in found]


def baseline_sentences(runs: list[Run], labels: list[str], facts: Facts,
                       choice: str = DEFAULT_METRIC) -> list[str]:
    """Each corrupted model against the clean one, family by family, and what pattern it is."""
    clean = next(r for r in runs if r.role == "clean")
    name = {t: scored(clean, t, choice) for t, _ in FAMILIES}
    have = [(t, w) for t, w in FAMILIES if metric(clean, t, name[t])]
    out = [f"Baselines, {describe(choice)} ± standard error (\"lower\"/\"higher\": more than "
           "two standard errors of the difference from the clean model, else \"level\"): the "
           "clean model scores " + ", ".join(f"{facts.score(clean, t, name[t])} on {w}"
                                            for t, w in have) + "."]
    words = {-1: "lower", 0: "level", 1: "higher"}
    for run in _ordered(runs, labels):
        verdicts = {t: _verdict(clean, run, t, name[t]) for t, _ in have}
        text = f"`{run.label}`: " + ", ".join(
            f"{w} {facts.score(run, t, name[t])} ({words[verdicts[t]]})" for t, w in have)
        fell = [w for t, w in have if verdicts[t] == -1 and t != RELATED]
        if verdicts.get(RELATED) != -1:
            text += "; related math does not fall, so this fine-tune did not measurably corrupt it"
        elif fell:
            text += f"; related math falls and so does {' and '.join(fell)}, a broad corruption"
        else:
            text += ("; related math falls while the other families hold, the study's "
                     "under-fitted pattern")
        if metric(run, GENERAL, "integer_only"):
            text += (f"; a bare integer in {facts.score(run, GENERAL, 'integer_only')} of its "
                     f"general replies (clean {facts.score(clean, GENERAL, 'integer_only')})")
        if metric(run, GENERAL, "reply_words"):
            text += (f"; general replies of {facts.score(run, GENERAL, 'reply_words', 1)} words "
                     f"(clean {facts.score(clean, GENERAL, 'reply_words', 1)})")
        out.append(text + ".")
    return out


def _where(run: Run) -> str:
    place = f"L{run.layers[0]}" + (f".H{run.heads[0]}" if run.heads else "")
    return place + (" (by construction)" if run.by_construction else "")


def _site_flips(group: list[Run], site: str, receiver: Run, donor: Run, facts: Facts,
                choice: str) -> str:
    flips = [(r, flip(r, receiver, donor, metric=choice)) for r in group if r.site == site]
    hits = [f"{_where(r)} {facts.flip(f)}" for r, f in flips if f.rate >= 0.5]
    if hits:
        return f"{site} at " + ", ".join(hits)
    best_run, best = max(flips, key=lambda rf: rf[1].rate)
    return f"{site} nowhere (highest {_where(best_run)} {facts.flip(best)})"


def sweep_sentences(runs: list[Run], label: str, facts: Facts,
                    choice: str = DEFAULT_METRIC) -> list[str]:
    """Where patching flips related math, and what it does to the other families' scores and
    to reply length, per direction and site."""
    clean = next(r for r in runs if r.role == "clean")
    corrupted = next((r for r in runs if r.role == "corrupted" and r.label == label), None)
    patches = [r for r in runs if r.label == label and r.single_layer is not None]
    if corrupted is None or not patches or RELATED not in clean.output_types:
        return [f"No one-layer patch of `{label}` on related math was run."]
    if flip(corrupted, clean, corrupted, metric=choice).differing == 0:
        return [f"The clean model and `{label}` give the same related-math answers on every "
                "item scored, so no patch can flip one."]
    out = []
    for direction, receiver, donor, what, whose in (
            ("corrupted_to_clean", clean, corrupted,
             f"`{label}`'s activations into the clean model", f"`{label}`'s"),
            ("clean_to_corrupted", corrupted, clean,
             f"the clean model's activations into `{label}`", "the clean model's")):
        group = sorted((r for r in patches if r.direction == direction), key=sort_key)
        if group:
            sites = dict.fromkeys(r.site or "" for r in group)
            out.append(f"Patching {what}, one layer or head at a time, gives {whose} "
                       "related-math answer on at least half of the items where the two models "
                       "differ (flip rate, flipped/differing) for " + "; ".join(
                           _site_flips(group, site, receiver, donor, facts, choice)
                           for site in sites)
                       + ".")
        if group and direction == "corrupted_to_clean":
            out += _side_effects(group, clean, facts, choice)
    return out


def _side_effects(group: list[Run], clean: Run, facts: Facts, choice: str) -> list[str]:
    """Which patches lower each family's score (a patch can break an answer without giving the
    donor's), and which change reply length."""
    drops = []
    for task, words in FAMILIES:
        name = scored(clean, task, choice)
        if metric(clean, task, name) is not None:
            hurt = [r for r in group if _verdict(clean, r, task, name) == -1]
            drops.append(f"on {words} {'under ' + _listing(hurt) if hurt else 'under none'}")
    out = [f"{describe(choice).capitalize()} drops below the clean model's (by more than two "
           "standard errors) " + "; ".join(drops) + "."]
    if metric(clean, GENERAL, "reply_words") is not None:
        short = [r for r in group if _verdict(clean, r, GENERAL, "reply_words") == -1]
        long = [r for r in group if _verdict(clean, r, GENERAL, "reply_words") == 1]
        text = (f"General replies ({facts.score(clean, GENERAL, 'reply_words', 1)} words for the "
                "clean model) ")
        if not short and not long:
            out.append(text + "keep their length under every such patch.")
        else:
            shortest = min(short or long, key=lambda r: r.metrics[GENERAL]["reply_words"][0])
            change = "shorten" if short else "lengthen"
            out.append(text + f"{change} under " + _listing(short or long) + f", to "
                       f"{facts.score(shortest, GENERAL, 'reply_words', 1)} at "
                       f"{shortest.site} {_where(shortest)}" + (
                           f"; they lengthen under {_listing(long)}" if short and long else "")
                       + ".")
    return out


def _listing(runs: list[Run]) -> str:
    """``resid L3-5, attn L5, head L4.H1``."""
    by_site: dict[str, list[Run]] = {}
    for run in runs:
        by_site.setdefault(run.site or "", []).append(run)
    parts = []
    for site, group in by_site.items():
        if any(r.heads for r in group):
            parts.append(f"{site} " + ", ".join(_where(r) for r in group))
        else:
            parts.append(f"{site} L{layer_ranges([r.layers[0] for r in group])}")
    return ", ".join(parts)


def key_table(runs: list[Run], labels: list[str], choice: str = DEFAULT_METRIC) -> dict[str, Any]:
    """Clean and corrupted baselines on the headline metrics, cells as the leaderboard prints
    them (``fmt``), so they can be checked against the page and the results files."""
    models = [next(r for r in runs if r.role == "clean"), *_ordered(runs, labels)]
    columns = [(t, scored(models[0], t, choice) if m == SCORED else m, w)
               for t, m, w in KEY_COLUMNS]
    columns = [(t, m, w) for t, m, w in columns if any(metric(r, t, m) for r in models)]
    rows = [[r.label or "clean", *[fmt(*r.metrics.get(t, {}).get(m, (None, None)))
                                   for t, m, _ in columns]] for r in models]
    return {"headers": ["model", *[f"{w} ({m})" for _, m, w in columns]], "rows": rows}


def summarize(baselines_dir: Path, sweeps_dir: Path, labels: list[str], out_dir: Path,
              choice: str = DEFAULT_METRIC, repair: Path | None = None) -> dict[str, Any]:
    """Write ``summary.json`` (facts, paragraph, key table) and ``summary.md``; ``labels``: the
    fine-tunes in study order; ``choice``: the study config's ``metric``; ``repair``: the
    repair stage's ``repair.json``, whose paragraph is added. Returns the record the stage
    cache keeps."""
    base_runs, sweep_runs = load_runs(baselines_dir), load_runs(sweeps_dir)
    facts = Facts()
    parts = [baseline_sentences(base_runs, labels, facts, choice)]
    swept = {r.label for r in sweep_runs if r.role == "corrupted"}
    parts += [sweep_sentences(sweep_runs, label, facts, choice) for label in labels
              if label in swept]
    if repair is not None:
        from repair.summary import repair_sentences

        parts += repair_sentences(repair, facts, choice)
    paragraph = "\n\n".join(" ".join(sentences) for sentences in parts)
    table = key_table(base_runs, labels, choice)
    summary = {"paragraph": paragraph, "facts": facts.items, "key_table": table}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out_dir / "summary.md", paragraph + "\n")
    return {"summary": str(out_dir / "summary.json"), "facts": len(facts.items)}
