"""Check attribution patching against exact teacher-forced CMAP, site by site.

    python -m patching.attribution_check --clean DIR --corrupted DIR --out DIR \\
        [--tasks-data DIR] [--rows 32] [--top-k N] [--recall-k 5] [--no-graddrop]

Ranks every component (each layer's resid/attn/mlp, each head) by attribution, then measures
the exact effect of patching each one alone (`--positions`, default "all") on the same
teacher-forced
batch: on EVERY component by default (cheap on the tiny model), on each site's `--top-k`
highest-attributed ones for a larger model. Writes attribution.md (Spearman correlation and
top-k recall per site, timings and their ratio), attribution.json and attribution.png.

Metrics: "logprob_diff" on related math; "kl" (first-order proxy) and "kl_fisher" (sampled
second-order term) on general prompts, against the same exact KL.

Exact effects: "logprob_diff" through the engine's `patched_logprobs`; the KL ones through
`attribution_passes.exact_effects` (it needs the full next-token distribution, which
`patched_logprobs` does not return; the tests pin it to `reference.context_logits`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from formats.errors import InputError
from formats.files import atomic_write_text
from formats.model_files import weights_problem

from .attribution import ATTRIBUTED_SITES, AttributionScores, attribution_scores
from .attribution_data import answer_pair_batch, own_reply_batch, read_rows
from .attribution_metrics import AttributionBatch, metric_named
from .attribution_passes import Component, exact_effects
from .attribution_report import render, scatter
from .errors import PatchingError
from .spec import PatchSpec
from .teacher_forced import patched_logprobs


@dataclass
class CheckConfig:
    """One validation run; `top_k` None = exact effects of every component."""

    clean: str
    corrupted: str
    out: str
    tasks_data: str = "tasks/data"
    rows: int = 32
    top_k: int | None = None
    recall_k: int = 5
    graddrop: bool = True
    direction: str = "corrupted_to_clean"
    positions: str = "all"
    max_new_tokens: int = 8
    dtype: str = "float32"
    device: str = "auto"

    def __post_init__(self) -> None:
        """Every input checked before a model loads (one-line ``PatchingError``)."""
        for name in ("clean", "corrupted"):
            path = Path(getattr(self, name))
            if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
                raise PatchingError(f"--{name} {path}: not a model or adapter folder")
            if (problem := weights_problem(path)) is not None:
                raise PatchingError(f"--{name} {path}: {problem}")
        for name in ("corrupt_related.jsonl", "corrupt_general.jsonl"):
            if not (Path(self.tasks_data) / name).is_file():
                raise PatchingError(f"--tasks-data {self.tasks_data}: no {name}")
        for name in ("rows", "recall_k", "max_new_tokens", "top_k"):
            value = getattr(self, name)
            if not (value is None and name == "top_k") and (type(value) is not int or value < 1):
                raise PatchingError(f"--{name.replace('_', '-')} {value!r}: expected an int >= 1")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise PatchingError(f"--dtype {self.dtype!r}: not a torch dtype (float32, bfloat16)")


def ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 with ties given their mean rank (as Spearman's rho needs)."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for value in torch.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation (NaN when either side is constant or has < 2 values)."""
    if len(x) < 2:
        return float("nan")
    a, b = ranks(x), ranks(y)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def recall_at_k(estimate: Tensor, exact: Tensor, k: int) -> float:
    """Share of the k largest |exact| effects that are among the k largest |estimate|."""
    k = min(k, len(exact))
    top = set(torch.argsort(-exact.abs(), stable=True)[:k].tolist())
    return len(top & set(torch.argsort(-estimate.abs(), stable=True)[:k].tolist())) / k


def load(path: str, dtype: str, device: str) -> Any:
    """A full model dir, or a LoRA adapter dir merged into a fresh copy of its base."""
    from transformers import AutoModelForCausalLM

    adapter = Path(path) / "adapter_config.json"
    base = json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.is_file() else None
    model = AutoModelForCausalLM.from_pretrained(base or path, dtype=getattr(torch, dtype))
    if base:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def _clock() -> float:
    """Wall time after the GPU has finished its queued work (CUDA runs asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def exact(
    receiver: Any,
    donor: Any,
    batch: AttributionBatch,
    metric: str,
    comps: list[Component],
    base: float,
    positions: str,
) -> Tensor:
    """Exact effect of patching each component alone (module docstring)."""
    if metric != "logprob_diff":
        return exact_effects(receiver, donor, batch, metric, comps, positions).double().cpu()
    weights = batch.weights.double()
    out = []
    for site, layer, head in comps:
        spec = PatchSpec(site, [layer], None if head is None else [head], positions)
        total = patched_logprobs(
            receiver,
            donor,
            batch.input_ids,
            spec,
            batch.continuation_lengths,
            batch.attention_mask,
        ).total()
        out.append(float(total.double().cpu() @ weights) - base)
    return torch.tensor(out, dtype=torch.float64)


def check_metric(
    receiver: Any, donor: Any, batch: AttributionBatch, metric: str, cfg: CheckConfig
) -> dict[str, Any]:
    """Attribution vs exact effects of one metric: per-site statistics, points and timings."""
    times = []
    for _ in range(3):  # the first call also pays one-off costs; report the median
        start = _clock()
        scores = attribution_scores(receiver, donor, batch, metric, positions=cfg.positions)
        times.append(_clock() - start)
    atp_s = sorted(times)[1]
    graddrop: AttributionScores | None = None
    if cfg.graddrop and hasattr(metric_named(metric), "objective"):  # first-order only
        start = _clock()
        graddrop = attribution_scores(
            receiver, donor, batch, metric, positions=cfg.positions, graddrop=True
        )
        gd_s = _clock() - start
    sites, exact_s, measured, total = {}, 0.0, 0, 0
    for site in ATTRIBUTED_SITES:
        ranked = scores.ranked(site)
        total += len(ranked)
        chosen = sorted(c for c, _ in ranked[: cfg.top_k or len(ranked)])
        index = [scores.components(site).index(c) for c in chosen]
        start = _clock()
        truth = exact(receiver, donor, batch, metric, chosen, scores.base, cfg.positions)
        exact_s += _clock() - start
        measured += len(chosen)
        attr = scores.values(site)[index].double().cpu()
        row = {
            "components": [list(c) for c in chosen],
            "attribution": attr.tolist(),
            "exact": truth.tolist(),
            "spearman": spearman(attr, truth),
            "spearman_abs": spearman(attr.abs(), truth.abs()),
            "recall": recall_at_k(attr, truth, cfg.recall_k),
        }
        if graddrop is not None:
            gd = graddrop.values(site, graddrop=True)[index].double().cpu()
            row |= {
                "graddrop": gd.tolist(),
                "graddrop_spearman_abs": spearman(gd, truth.abs()),
                "graddrop_recall": recall_at_k(gd, truth, cfg.recall_k),
            }
        sites[site] = row
    return {
        "metric": metric,
        "base": scores.base,
        "rows": len(batch.continuation_lengths),
        "sites": sites,
        "seconds": {
            "attribution": atp_s,
            "attribution_graddrop": gd_s if graddrop is not None else None,
            "exact": exact_s,
            "exact_every_component": exact_s * total / measured,
        },
        "measured": measured,
        "components": total,
    }


def run_check(cfg: CheckConfig) -> Path:
    """Load the pair, build both batches, check both metrics, write the report; its path."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    clean, corrupted = (load(p, cfg.dtype, cfg.device) for p in (cfg.clean, cfg.corrupted))
    receiver, donor = (
        (clean, corrupted) if cfg.direction == "corrupted_to_clean" else (corrupted, clean)
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg.clean)
    data = Path(cfg.tasks_data)
    related = read_rows(data / "corrupt_related.jsonl", cfg.rows)
    general = read_rows(data / "corrupt_general.jsonl", cfg.rows)
    batches = {
        "logprob_diff": answer_pair_batch(tokenizer, corrupted, related, cfg.max_new_tokens),
        "kl": own_reply_batch(tokenizer, receiver, general, cfg.max_new_tokens),
    }
    batches["kl_fisher"] = batches["kl"]
    todo = [(metric, batch) for metric, batch in batches.items() if batch is not None]
    results = [check_metric(receiver, donor, batch, metric, cfg)
               for metric, batch in tqdm(todo, desc="attribution check", unit="metric")]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": asdict(cfg),
        "results": results,
        "skipped": [m for m, b in batches.items() if b is None],
    }
    atomic_write_text(out / "attribution.json", json.dumps(report, indent=1))
    scatter(results, out / "attribution.png")
    atomic_write_text(out / "attribution.md", render(report, "attribution.png"))
    return out / "attribution.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patching.attribution_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clean", required=True, help="clean model dir")
    parser.add_argument("--corrupted", required=True, help="corrupted model or LoRA adapter dir")
    parser.add_argument("--out", required=True, help="folder for attribution.md/.json/.png")
    parser.add_argument("--tasks-data", default="tasks/data", help="folder of the task JSONL")
    parser.add_argument("--rows", type=int, default=32, help="questions per metric")
    parser.add_argument("--top-k", type=int, help="exact effects only of each site's top k")
    parser.add_argument("--recall-k", type=int, default=5, help="k of the top-k recall")
    parser.add_argument("--no-graddrop", dest="graddrop", action="store_false")
    parser.add_argument(
        "--direction",
        choices=["corrupted_to_clean", "clean_to_corrupted"],
        default="corrupted_to_clean",
    )
    parser.add_argument(
        "--positions",
        choices=["all", "newest"],
        default="all",
        help="patch every position, or only the one predicting each scored token",
    )
    parser.add_argument("--max-new-tokens", type=int, default=8, help="greedy reply length")
    parser.add_argument("--dtype", default="float32", help="torch dtype to load the models in")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (auto: GPU if any)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    args = vars(parser.parse_args(argv))
    if (threads := args.pop("threads")) is not None:
        torch.set_num_threads(threads)
    try:
        cfg = CheckConfig(**args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {run_check(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
