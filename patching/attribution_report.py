"""Markdown tables and the scatter plot of an attribution check (`attribution_check`).

The tables are plain functions of the JSON report so that the leaderboard page
(`leaderboard.attribution_section`) shows the same numbers as attribution.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from formats.files import save_figure

METHOD = [
    "- **Score** of a component c: sum over positions p of (a_donor(c,p) - a_receiver(c,p)) . "
    "dM/da_receiver(c,p), teacher-forced. `positions=all`: every position of prompt + "
    "continuation patched, as in `patched_logprobs(positions='all')`; `positions=newest`: "
    "each scored token sees the unpatched history with only the position predicting it "
    "patched. One donor forward (no grad), one receiver forward + backward for all "
    "components.",
    "- **logprob_diff**: related-math questions the corrupted model answers wrongly; M = log "
    "p(corrupted model's greedy answer) - log p(correct answer), both ending in end-of-turn.",
    "- **kl**: general prompts, teacher-forced on the receiver's own greedy reply; M = KL(p_own "
    "|| p_patched) summed over the reply's next-token positions. KL has zero gradient at the "
    "unpatched point, so the score is a first-order PROXY: the derivative of sum_v p_donor(v) "
    "log p_patched(v) (how far the patch moves the receiver towards the donor's distribution). "
    "Exact KL is >= 0, so only the |.| columns are meaningful for it.",
    "- **kl_fisher**: the same KL scored by its second-order term, 1/2 E_y[(d/dalpha log "
    "p_own(y))^2] with y drawn from the receiver's own next-token distribution (16 seeded "
    "draws, one backward pass each): an estimate of KL itself, in its units.",
    "- **GradDrop** (AtP*): for each layer l the backward pass is repeated with the gradient "
    "through layer l's attention and MLP outputs zeroed; score = mean over the other L-1 "
    "layers of |score with l dropped| (catches cancelling paths; compared with |exact|).",
    "- Exact effect: the metric change when the component alone is patched (CMAP, "
    "teacher-forced, same positions); top-k recall = share of the k largest |exact| "
    "effects among the k largest |scores|; chance = k/n, what a random ranking of the n "
    "components expects (with 6 layers, top-5 of 6 is nearly free: read the heads row).",
]


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def agreement_table(report: dict[str, Any]) -> list[str]:
    """Spearman and top-k recall of attribution (and GradDrop) vs exact effects, per site."""
    k = report["config"]["recall_k"]
    rows = []
    for result in report["results"]:
        for site, s in result["sites"].items():
            rows.append(
                [
                    result["metric"],
                    site,
                    str(len(s["exact"])),
                    _f(s["spearman"]),
                    _f(s["spearman_abs"]),
                    f"{_f(s['recall'])} ({_f(min(k, len(s['exact'])) / len(s['exact']))})",
                    _f(s.get("graddrop_spearman_abs")),
                    _f(s.get("graddrop_recall")),
                ]
            )
    return _table(
        [
            "metric",
            "site",
            "components",
            "Spearman",
            "Spearman abs",
            f"top-{k} recall (chance)",
            "GradDrop Spearman abs",
            f"GradDrop top-{k} recall",
        ],
        rows,
    )


def timing_table(report: dict[str, Any]) -> list[str]:
    """Seconds of attribution and of exact patching, and their ratio."""
    rows = []
    for r in report["results"]:
        t = r["seconds"]
        every = r["measured"] == r["components"]
        rows.append(
            [
                r["metric"],
                str(r["rows"]),
                _f(t["attribution"], 3),
                _f(t["attribution_graddrop"], 3),
                f"{_f(t['exact'], 3)} ({r['measured']} components)",
                _f(t["exact_every_component"], 3) + ("" if every else " (extrapolated)"),
                _f(t["exact_every_component"] / t["attribution"], 1) + "x",
            ]
        )
    return _table(
        [
            "metric",
            "rows",
            "AtP s",
            "AtP+GradDrop s",
            "exact s",
            "exact, every component s",
            "exact / AtP",
        ],
        rows,
    )


def render(report: dict[str, Any], plot: str) -> str:
    cfg = report["config"]
    scope = (
        "every component"
        if cfg["top_k"] is None
        else f"each site's top {cfg['top_k']} by |attribution| (statistics over those only)"
    )
    lines = [
        "# Attribution patching vs exact cross-model patching",
        "",
        f"- Clean `{cfg['clean']}`, corrupted `{cfg['corrupted']}`, direction "
        f"`{cfg['direction']}`; positions=`{cfg['positions']}`; {cfg['dtype']}; up to "
        f"{cfg['rows']} questions per metric; exact effects of {scope}.",
        *(
            f"- Skipped `{m}`: no question in the batch (e.g. the corrupted model answers "
            "every related question correctly)."
            for m in report["skipped"]
        ),
        "",
        "## Method",
        "",
        *METHOD,
        "",
        "## Agreement per site",
        "",
        *agreement_table(report),
        "",
        "## Time",
        "",
        *timing_table(report),
        "",
        f"![attribution vs exact effect]({plot})",
        "",
    ]
    return "\n".join(lines)


def scatter(results: list[dict[str, Any]], path: Path) -> None:
    """Attribution (y) against exact effect (x): one panel per metric and site, each method on
    its own y scale (AtP left, GradDrop right), since their magnitudes need not match the exact
    effect's or each other's (a KL attribution is near 0 where its exact effect is not); the
    ranks are what the check compares (rho in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sites = list(results[0]["sites"]) if results else []
    fig, axes = plt.subplots(
        max(len(results), 1),
        max(len(sites), 1),
        figsize=(3.6 * max(len(sites), 1), 3.0 * max(len(results), 1)),
        squeeze=False,
    )
    for i, result in enumerate(results):
        for j, site in enumerate(sites):
            s, ax = result["sites"][site], axes[i][j]
            ax.scatter(s["exact"], s["attribution"], s=12, color="tab:blue", label="AtP")
            ax.set_ylabel("AtP attribution", fontsize=8, color="tab:blue")
            ax.tick_params(axis="y", labelcolor="tab:blue")
            if "graddrop" in s:
                twin = ax.twinx()
                twin.scatter(s["exact"], s["graddrop"], s=10, marker="x", color="tab:orange",
                             label="GradDrop")
                twin.set_ylabel("GradDrop", fontsize=8, color="tab:orange")
                twin.tick_params(axis="y", labelsize=7, labelcolor="tab:orange")
            ax.set_title(f"{result['metric']} / {site}  rho={_f(s['spearman'])}", fontsize=9)
            ax.set_xlabel("exact effect", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # atomic: no half-written PNG after a kill
    plt.close(fig)
