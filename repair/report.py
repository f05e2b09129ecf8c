"""The repair tables and plot, rendered from ``repair.json`` (``repair.record``).

One table per corrupted model: each repaired model's suite, recovery with its interval,
collateral changes (flagged beyond two standard errors) and parameters touched; then the
contrasts of located components against their same-size controls. The plot is a forest plot:
one row per repair (method, selection and share of parameters touched), recovery with its
interval, the located components and each control in their own colours. The study adds the
section to its sweeps page; ``python -m repair.report RESULTS_DIR --out DIR`` writes it from a
folder of repair results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tabulate import tabulate

from formats.files import atomic_write_text, save_figure
from leaderboard.results import LeaderboardError
from leaderboard.tables import GENERAL, RELATED, UNRELATED

from .record import REPORT, load, measure

SHORT = {RELATED: "related", UNRELATED: "unrelated", GENERAL: "general",
         "corrupt_ethics_mc": "ethics"}
MARKERS = {"restore": "o", "retrain": "^"}
COLOURS = {"located": "tab:blue", "random": "tab:orange", "lowest": "tab:red",
           "full": "tab:gray"}


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _score(pair: list[float | None]) -> str:
    value, stderr = pair
    return "n/a" if value is None else f"{value:.3f}" + ("" if stderr is None else
                                                         f" ± {stderr:.3f}")


def _recovery(item: dict[str, Any]) -> str:
    if item["value"] is None:
        return "undefined"
    return f"{item['value']:.2f} [{item['low']:.2f}, {item['high']:.2f}]"


def _collateral(item: dict[str, Any] | None) -> str:
    if item is None:
        return "n/a"
    mark = {-1: " ▼", 0: "", 1: " ▲"}[item["flag"]]
    return f"{item['delta']:+.3f} ± {item['stderr']:.3f}{mark}"


def _control(row: dict[str, Any]) -> str:
    return f"random (seed {row['seed']})" if row["control"] == "random" else row["control"]


def label_tables(label: str, data: dict[str, Any]) -> list[str]:
    """Markdown lines of one corrupted model's tables."""
    others = [t for t in data["metrics"] if t != RELATED]
    headers = ["method", "selection", "control", "components", "params touched",
               f"related ({data['metrics'][RELATED]})", "recovery [95% CI]",
               *[f"Δ {SHORT.get(t, t)}" for t in others]]
    rows = [["clean", "", "", "", "", _score(data["clean"][RELATED]), "1 (by definition)",
             *["" for _ in others]],
            ["corrupted", "", "", "", "", _score(data["corrupted"][RELATED]), "0 (by definition)",
             *["" for _ in others]]]
    for r in data["rows"]:
        comps = "every weight" if r["components"] is None else ", ".join(r["components"])
        rows.append([r["method"], "" if r["site"] is None else f"{r['site']} top {r['k']}",
                     _control(r), comps, f"{r['touched']:,} ({r['share']:.2%})",
                     _score(r["suite"][RELATED]), _recovery(r["recovery"]),
                     *[_collateral(r["collateral"].get(t)) for t in others]])
    contrast = [[c["method"], f"{c['site']} top {c['k']}", c["against"],
                 f"{_num(c['value'])} [{_num(c['low'])}, {_num(c['high'])}]", c["verdict"]]
                for c in data["contrasts"]]
    return [f"### `{label}`", "",
            f"Related math on {data['related_items']} items the ranking did not read "
            f"(direction `{data['direction']}`). Δ: change against `{label}` on the paired "
            "items ± its standard error; ▼/▲ beyond two standard errors.", "",
            tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), "",
            "Located minus control recovery (paired bootstrap, 95% CI; `random`: the mean of "
            "the random draws):", "",
            tabulate(contrast, headers=["method", "selection", "against", "difference",
                                        "verdict"], tablefmt="github", disable_numparse=True),
            ""]


def markdown(record: dict[str, Any], image: str | None) -> list[str]:
    """The section's markdown lines; ``image``: the plot's path relative to the page."""
    lines = ["## Repair: the located components against same-size controls", "",
             "Recovery = (repaired - corrupted) / (clean - corrupted) on related math "
             f"(`{record['metric']}`), with a 95% percentile bootstrap over the paired items. "
             "Controls: the same number of components of the same kind drawn at random, the "
             "ones the ranking put lowest, and (retraining) the whole model with the same steps "
             "and data.", ""]
    if image:
        lines += [f"![recovery against parameters touched]({image})", ""]
    for label, data in record["labels"].items():
        lines += label_tables(label, data)
    return lines


def plot(record: dict[str, Any], path: Path) -> Path:
    """A forest plot per corrupted model: one row per repair (method and selection, with the
    share of parameters it touches), recovery with its 95% interval, the located components
    and each control side by side in the row; labels are the rows' names, so none overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(record["labels"])
    groups = {label: _forest_rows(record["labels"][label]["rows"]) for label in labels}
    panel = max(len(g) for g in groups.values()) * 0.42 + 1.2  # inches per panel row
    cols = min(2, len(labels))  # a grid of two columns: four seeded models stay legible
    grid_rows = -(-len(labels) // cols)
    height = panel * grid_rows + 0.6
    fig, axes = plt.subplots(grid_rows, cols, figsize=(6.6 * cols, height), squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    offsets = {c: (i - (len(COLOURS) - 1) / 2) * 0.16 for i, c in enumerate(COLOURS)}
    for ax, label in zip(axes.flat, labels, strict=False):
        names = list(groups[label])
        for y, name in enumerate(names):
            for r in groups[label][name]:
                rec = r["recovery"]
                if rec["value"] is None:
                    continue
                err = [[rec["value"] - rec["low"]], [rec["high"] - rec["value"]]]
                ax.errorbar(rec["value"], y + offsets[r["control"]], xerr=err,
                            fmt=MARKERS[r["method"]], color=COLOURS[r["control"]], alpha=0.85,
                            capsize=2, markersize=5)
        ax.axvline(0, color="k", lw=0.6)
        ax.axvline(1, color="k", lw=0.6, ls="--")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set(xlabel="recovery of related math (95% CI); 0 corrupted, 1 clean", title=label)
    handles = [plt.Line2D([], [], color=c, marker="s", ls="", label=k) for k, c in COLOURS.items()]
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=k)
                for k, m in MARKERS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def _forest_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Row name (``restore resid top 1 (15.3%)``, ``retrain every weight (100%)``) -> the
    repairs drawn in that row, in method then selection order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["method"], r["site"] is None, r["site"] or "",
                                         r["k"] or 0)):
        what = "every weight" if r["site"] is None else f"{r['site']} top {r['k']}"
        out.setdefault(f"{r['method']} {what} ({100 * r['share']:.1f}%)", []).append(r)
    return out


def section(repair_dir: Path, page: Path) -> list[str]:
    """The page's repair section from ``repair_dir/repair.json`` (and its plot)."""
    path = Path(repair_dir) / REPORT
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LeaderboardError(f"{path}: no readable repair report ({err})") from None
    image = Path(repair_dir) / "repair.png"
    rel = Path(os.path.relpath(image, page.parent)).as_posix() if image.is_file() else None
    return markdown(record, rel)


def write_report(results_dir: Path, out_dir: Path, choice: str, resamples: int = 2000,
                 order: list[str] | None = None) -> Path:
    """``repair.json`` with the measures, ``repair.md`` (tables) and ``repair.png`` (recovery
    against parameters touched) in ``out_dir``; returns the JSON's path."""
    record = measure(load(results_dir), choice, resamples, order)
    path = out_dir / REPORT
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    image = plot(record, out_dir / "repair.png")
    atomic_write_text(out_dir / "repair.md", "\n".join(markdown(record, image.name)) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from formats.errors import InputError
    from leaderboard.metric import DEFAULT_METRIC, METRICS

    parser = argparse.ArgumentParser(prog="python -m repair.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", type=Path, help="folder of scored repair variants")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for repair.json, repair.md and repair.png")
    parser.add_argument("--metric", choices=METRICS, default=DEFAULT_METRIC)
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results_dir, args.out, args.metric)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
