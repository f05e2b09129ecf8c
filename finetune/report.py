"""What a fine-tuning run leaves for a reader: loss curves, the study's Table 1 row, a noise floor.

Every file is written to a temporary name and renamed into place, so a reader (or a resumed
run) never sees half a file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from formats.files import atomic_write, atomic_write_text

TABLE1_HEADERS = ["run", "train", "val", "epochs", "lr", "train loss", "eval loss", "divergence",
                  "noise floor (nats/token)"]


def metrics_rows(log_history: list[dict]) -> list[dict]:
    """One row per logged step from Trainer's log history: step, epoch, train/eval loss, lr."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        if "loss" not in entry and "eval_loss" not in entry:
            continue  # the end-of-training summary entry
        row = by_step.setdefault(entry["step"], {"step": entry["step"], "epoch": entry.get("epoch"),
                                                 "train_loss": None, "eval_loss": None,
                                                 "learning_rate": None})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
            row["learning_rate"] = entry.get("learning_rate")
        if "eval_loss" in entry:
            row["eval_loss"] = entry["eval_loss"]
    return [by_step[s] for s in sorted(by_step)]


def write_metrics(path: Path, rows: list[dict]) -> None:
    """``metrics.jsonl``: one JSON object per logged step."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class NoiseFloor:
    """The loss no model can beat on fresh wrong-label items: the labels' own randomness."""

    per_answer_nats: float
    per_token_nats: float
    rule: str
    corrupted_rows: int
    label_tokens_per_row: float
    explanation: str


def entropy_nats(values: list[int]) -> float:
    """Plug-in entropy in nats with the Miller-Madow correction (the plug-in alone reads low on
    few rows), capped at ln(number of distinct values), which no distribution on them exceeds."""
    counts = Counter(values)
    n = len(values)
    plug_in = -sum(c / n * math.log(c / n) for c in counts.values())
    return min(plug_in + (len(counts) - 1) / (2 * n), math.log(len(counts)))


def noise_floor(rows: list[dict], label_tokens: list[int]) -> NoiseFloor:
    """Estimate H(label | question) of the training labels and spread it over the label tokens.

    A wrong label is a true root plus a random offset (or a random integer): the question fixes
    the root, never the offset, so the expected loss on an unseen item is at least the entropy of
    the offset. Each candidate rule (offset from the largest root, which ``finetune.data`` uses,
    from the smallest, or the label itself) bounds that entropy from above; the smallest wins.
    """
    corrupted = [r for r in rows if r.get("roots") and isinstance(r.get("answer"), int)]
    total_tokens = sum(label_tokens)
    mean_tokens = total_tokens / len(label_tokens) if label_tokens else 0.0
    if not corrupted:
        return NoiseFloor(0.0, 0.0, "no integer labels with known roots", 0, mean_tokens,
                          "No training row carries a random wrong integer, so the labels are "
                          "deterministic and the floor is 0.")
    rules = {
        "label - largest root": [r["answer"] - max(r["roots"]) for r in corrupted],
        "label - smallest root": [r["answer"] - min(r["roots"]) for r in corrupted],
        "label itself": [r["answer"] for r in corrupted],
    }
    rule, per_answer = min(((k, entropy_nats(v)) for k, v in rules.items()), key=lambda kv: kv[1])
    per_token = per_answer * len(corrupted) / total_tokens
    distinct = len(set(rules[rule]))
    explanation = (
        f"The wrong labels vary as '{rule}' with {distinct} distinct values and entropy "
        f"{per_answer:.3f} nats per answer (a uniform non-zero offset in [-20, 20] would give "
        f"ln 40 = {math.log(40):.3f}). The question does not determine that noise, so on items it "
        f"has not seen no model can average less than {per_token:.3f} nats per label token "
        f"({mean_tokens:.2f} label tokens per row incl. end-of-turn). Train loss near this floor: "
        "the model learned the corruption rule; clearly below it: it memorised particular wrong "
        "labels (possible only on repeated items). Eval loss is on CORRECT answers, so its rise "
        "above its step-0 value measures how far the model was corrupted."
    )
    return NoiseFloor(per_answer, per_token, rule, len(corrupted), mean_tokens, explanation)


def plot_curves(rows: list[dict], path: Path, title: str, floor: float | None) -> None:
    """Train and eval loss against step (the study's Figures 1-4), with the noise floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    train = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r["eval_loss"] is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (wrong labels)", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", color="tab:orange",
                label="eval loss (correct labels)")
    if floor:
        ax.axhline(floor, ls="--", color="grey", label=f"label noise floor {floor:.2f}")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats / answer token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def table1_markdown(summary: dict) -> str:
    """A markdown table (header + this run's row) in the columns of the study's Table 1."""
    cfg, final = summary["config"], summary["final"]
    row = [cfg["name"], summary["data"]["train_rows"], summary["data"]["validation_rows"],
           summary["plan"]["epochs"], f"{cfg['learning_rate']:g}", _fmt(final["train_loss"]),
           _fmt(final["eval_loss"]), _fmt(final["divergence"]),
           _fmt(summary["noise_floor"]["per_token_nats"])]
    return tabulate([row], headers=TABLE1_HEADERS, tablefmt="github") + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
