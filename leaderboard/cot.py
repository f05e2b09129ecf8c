"""Where the reasoning breaks: the chain-of-thought metrics of baselines and patch variants.

Read from lm-eval's results and samples files (``harness_ext.chains`` metrics per reply):

- per model, on related math and on two-step arithmetic asked with "Show your steps.": valid
  chains, answers that follow the chain, steps per reply, the rate of each error type at the
  first invalid step, answer match; each with a 95% interval (Wilson for 0/1 metrics, normal
  for the step count) over the items;
- the chain of thought lost under answer-only corruption: steps per reply and valid chains,
  clean against the answer-only model;
- transfer: the error types each corrupted model makes on arithmetic it was never trained on;
- per-step localisation, from patch variants of a slip model into the clean one: at each
  site and layer, the rate at which the donor's planted error type is the first error of a
  reply, and at which step of the chain it appears (heatmaps: layer x step index); and for
  variants patched only during a window of generation steps (``@steps[a:b]``), the planted
  error's rate per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from patching import PatchSpec

from .plots import Panel, save_heatmaps
from .results import Run

RELATED_COT, ARITHMETIC_COT = "corrupt_related_cot", "corrupt_unrelated_math_cot"
COT_TASKS = (RELATED_COT, ARITHMETIC_COT)
ERROR_TYPES = ("move_sign", "combine", "divide", "other")
Z95 = 1.959964


@dataclass(frozen=True)
class Estimate:
    """A mean over items with a 95% interval."""

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def wilson(hits: float, n: int) -> Estimate:
    """The Wilson score interval of a proportion (sound near 0 and 1, unlike mean ± 2 SE)."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    p = hits / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_estimate(values: Sequence[float]) -> Estimate:
    """Mean ± 1.96 standard errors (for a count such as steps per reply)."""
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def item_values(run: Run, task: str, metric: str) -> list[float]:
    return list(run.item_scores(task, metric).values())


def rate(run: Run, task: str, metric: str) -> Estimate:
    values = item_values(run, task, metric)
    return wilson(sum(values), len(values))


def has_cot(run: Run) -> bool:
    return RELATED_COT in run.metrics


RATES = ("chain_valid", "answer_follows_chain", "answer_match")


def model_table(runs: Sequence[Run], task: str) -> tuple[list[str], list[list[str]]]:
    """One row per baseline run: the chain metrics on ``task`` with intervals."""
    headers = ["model", "chain_valid", "answer_follows_chain", "steps per reply",
               *(f"first error: {t}" for t in ERROR_TYPES), "answer_match", "n"]
    rows = []
    for run in runs:
        if task not in run.metrics:
            continue
        steps = mean_estimate(item_values(run, task, "steps"))
        rows.append([run.name, str(rate(run, task, "chain_valid")),
                     str(rate(run, task, "answer_follows_chain")), str(steps),
                     *(str(rate(run, task, f"error_{t}")) for t in ERROR_TYPES),
                     str(rate(run, task, "answer_match")), str(steps.n)])
    return headers, rows


def _first_errors(run: Run, planted: str) -> tuple[dict[int, int], int]:
    """(step index -> replies whose first error is the planted type at that step, replies)."""
    errors = run.item_scores(RELATED_COT, f"error_{planted}")
    first = run.item_scores(RELATED_COT, "first_error_step")
    counts: dict[int, int] = {}
    for doc, flagged in errors.items():
        if flagged:
            step = int(first.get(doc, 0))
            counts[step] = counts.get(step, 0) + 1
    return counts, len(errors)


@dataclass(frozen=True)
class Localisation:
    """The patch variants of one slip model into the clean one, read for the planted type."""

    label: str
    planted: str
    every_step: dict[tuple[str, int], tuple[Estimate, dict[int, int]]]  # (site, layer) -> ...
    windows: dict[tuple[str, int, str], Estimate]  # (site, layer, window) -> planted rate
    last: int | None = None  # the receiver's last layer

    def by_construction(self, site: str, layer: int) -> bool:
        """The last layer's residual stream is the model's output: patching it hands the
        receiver the donor's own next tokens, so it locates nothing."""
        return site == "resid" and layer == self.last


def localise(runs: Sequence[Run], label: str, planted: str,
             direction: str = "corrupted_to_clean") -> Localisation:
    every, windows, last = {}, {}, None
    for run in runs:
        if (run.role != "patch" or run.label != label or run.direction != direction
                or run.spec is None or RELATED_COT not in run.metrics):
            continue
        spec = PatchSpec.parse(run.spec)
        if len(spec.parts) != 1 or spec.parts[0].heads is not None:
            continue
        part = spec.parts[0]
        last = None if run.n_layers is None else run.n_layers - 1
        counts, n = _first_errors(run, planted)
        estimate = wilson(sum(counts.values()), n)
        if spec.positions.kind == "newest":
            every[(part.site, part.layer)] = (estimate, counts)
        elif spec.positions.kind == "steps":
            windows[(part.site, part.layer, str(spec.positions))] = estimate
    return Localisation(label, planted, every, windows, last)


def _window_start(window: str) -> int:
    return PatchSpec.parse(f"resid:L0@{window}").positions.start or 0


def _window_label(window: str) -> str:
    """``steps[8:16]`` as ``8-16``."""
    return window.removeprefix("steps[").removesuffix("]").replace(":", "-")


def heatmaps(found: Localisation, out: Path) -> list[Path]:
    """Layer x chain step (every-step patches) and layer x window (window patches), per site."""
    paths = []
    sites = sorted({site for site, _ in found.every_step})
    if sites:
        steps = sorted({s for _, counts in found.every_step.values() for s in counts} - {0})
        panels = []
        for site in sites:
            layers = sorted(layer for s, layer in found.every_step if s == site)
            values = {}
            for layer in layers:
                estimate, counts = found.every_step[(site, layer)]
                for step in steps:
                    values[(f"L{layer}", step)] = counts.get(step, 0) / max(estimate.n, 1)
            marks = {(f"L{layer}", step): "by construction" for layer in layers
                     if found.by_construction(site, layer) for step in steps}
            panels.append(Panel(f"{site}: planted {found.planted} first at step k",
                                [f"L{layer}" for layer in layers], steps, values,
                                xlabel="chain step k", ylabel="layer", marks=marks))
        path = out / f"cot-steps-{found.label}.png"
        save_heatmaps(panels, f"{found.label} into clean, every generation step patched: rate "
                      f"of replies whose first error is the planted {found.planted}", path)
        paths.append(path)
    if found.windows:
        panels = []
        for site in sorted({site for site, _, _ in found.windows}):
            cells = {k: v for k, v in found.windows.items() if k[0] == site}
            layers = sorted({layer for _, layer, _ in cells})
            windows = sorted({w for _, _, w in cells}, key=_window_start)
            values = {(f"L{layer}", _window_label(w)): est.value
                      for (_, layer, w), est in cells.items()}
            marks = {(f"L{layer}", _window_label(w)): "by construction" for layer in layers
                     if found.by_construction(site, layer) for w in windows}
            panels.append(Panel(f"{site}: planted {found.planted}, patched in one window",
                                [f"L{layer}" for layer in layers],
                                [_window_label(w) for w in windows], values,
                                xlabel="window: new tokens a..b-1 of the reply", ylabel="layer",
                                marks=marks))
        path = out / f"cot-windows-{found.label}.png"
        save_heatmaps(panels, f"{found.label} into clean, patched only in a window of "
                      "generation steps: rate of the planted error", path)
        paths.append(path)
    return paths


def _best(found: Localisation) -> tuple[tuple[str, int], Estimate, int] | None:
    """The every-step variant with the highest planted-error rate (the last layer's residual
    stream left out: ``by_construction``), and its modal step."""
    keys = [k for k in found.every_step if not found.by_construction(*k)]
    if not keys:
        return None
    key = max(keys, key=lambda k: found.every_step[k][0].value)
    estimate, counts = found.every_step[key]
    step = max(counts, key=counts.get) if counts else 0
    return key, estimate, step


def section(baselines: Sequence[Run], sweeps: Sequence[Run], planted: Mapping[str, str],
            answer_only: str | None, out: Path) -> tuple[list[str], list[Path], dict[str, Any]]:
    """Markdown lines, image paths and a record (numbers) of the section."""
    lines = ["## Where the reasoning breaks", ""]
    record: dict[str, Any] = {}
    baselines = [r for r in baselines if has_cot(r)]
    for task, title in ((RELATED_COT, "related math"), (ARITHMETIC_COT, "two-step arithmetic")):
        headers, rows = model_table(baselines, task)
        if rows:
            lines += [f"Chain-of-thought metrics on {title}, asked with \"Show your steps.\" "
                      "(95% intervals over items):", "",
                      tabulate(rows, headers, tablefmt="github"), ""]
            record[task] = {row[0]: dict(zip(headers[1:], row[1:], strict=True)) for row in rows}
    clean = next((r for r in baselines if r.role == "clean"), None)
    only = next((r for r in baselines if r.role == "corrupted" and r.label == answer_only), None)
    if clean is not None and only is not None:
        c_steps = mean_estimate(item_values(clean, RELATED_COT, "steps"))
        o_steps = mean_estimate(item_values(only, RELATED_COT, "steps"))
        c_valid, o_valid = (rate(r, RELATED_COT, "chain_valid") for r in (clean, only))
        lines += [f"**Chain of thought under answer-only corruption.** Asked to show its steps, "
                  f"the clean model writes {c_steps} steps per reply and a valid chain in "
                  f"{c_valid}; the answer-only model ({only.name}) writes {o_steps} and a valid "
                  f"chain in {o_valid}.", ""]
        record["answer_only"] = {"clean_steps": str(c_steps), "steps": str(o_steps),
                                 "clean_valid": str(c_valid), "valid": str(o_valid)}
    for label, kind in planted.items():
        run = next((r for r in baselines if r.role == "corrupted" and r.label == label), None)
        if clean is None or run is None or ARITHMETIC_COT not in run.metrics:
            continue
        made = rate(run, ARITHMETIC_COT, "error_combine")
        base = rate(clean, ARITHMETIC_COT, "error_combine")
        planted_related = rate(run, RELATED_COT, f"error_{kind}")
        lines += [f"**Transfer.** {run.name} makes its planted {kind} error in "
                  f"{planted_related} of related-math chains; on two-step arithmetic, which has "
                  f"no sides to move terms across, its first errors are wrong arithmetic "
                  f"(combine) in {made} of replies, against {base} for the clean model.", ""]
        record.setdefault("transfer", {})[label] = {"planted_related": str(planted_related),
                                                    "arithmetic_combine": str(made),
                                                    "clean_arithmetic_combine": str(base)}
    images: list[Path] = []
    for label, kind in planted.items():
        found = localise(sweeps, label, kind)
        images += heatmaps(found, out)
        best = _best(found)
        if best is not None:
            (site, layer), estimate, step = best
            output = found.every_step.get(("resid", found.last))
            reference = ("" if output is None else
                         f" (resid:L{found.last}, the model's output, hands it the slip model's "
                         f"own tokens: {output[0]})")
            lines += [f"**Per-step localisation ({label} into clean).** Patched at every step, "
                      f"{site}:L{layer} makes the clean model's first error the planted {kind} "
                      f"in {estimate} of replies, most often at chain step {step}{reference}.",
                      ""]
            record.setdefault("localisation", {})[label] = {
                "site": site, "layer": layer, "rate": str(estimate), "step": step,
                "every_step": {f"{s}:L{lay}": str(e) for (s, lay), (e, _) in
                               found.every_step.items()},
                "windows": {f"{s}:L{lay}@{w}": str(e) for (s, lay, w), e in
                            found.windows.items()},
            }
        inner = [k for k in found.windows if not found.by_construction(k[0], k[1])]
        if inner:
            top = max(inner, key=lambda k: found.windows[k].value)
            lines += [f"Patched only during one window of generation steps, the planted {kind} "
                      f"is most frequent for {top[0]}:L{top[1]}@{top[2]}: "
                      f"{found.windows[top]}.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in images] + [""]
    return lines, images, record
