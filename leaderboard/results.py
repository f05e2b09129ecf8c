"""Read a folder of lm-eval runs (results + samples files) and check it is one coherent sweep.

Only lm-eval's own files are read: what the runner writes (``leaderboard.runner``), or what
``lm_eval --output_path DIR/<variant> --log_samples`` writes by hand. A variant's identity comes
from the runner's record (``RECORD_KEY``: what the variant is) when present, else from lm-eval's
recorded ``model_args`` (the same ``--model_args`` a user gives ``patched_hf``). Every problem
is one line naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.errors import InputError
from patching import PatchSpec

from .metric import integer_reader
from .runner import FORMAT
from .store import RECORD_KEY, latest_results, samples_file

_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


class LeaderboardError(InputError):
    """Bad leaderboard input; the message is one line naming the file."""


@dataclass(eq=False)  # compared and hashed by identity: one object per results file
class Run:
    """One scored variant: identity, metrics from the results file, samples on demand."""

    name: str
    results_file: Path
    role: str  # clean | corrupted | patch (sweeps); repair | restore (the repair stage)
    label: str | None
    clean: str
    corrupted: str | None
    site: str | None = None
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] | None = None
    positions: str | None = None
    direction: str | None = None
    spec: str | None = None  # a patch's canonical text (patching.spec)
    n_layers: int | None = None
    identity: dict[str, Any] = field(default_factory=dict)  # the record's variant, as written
    metrics: dict[str, dict[str, tuple[float | None, float | None]]] = field(default_factory=dict)
    output_types: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    _samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    _integers: dict[tuple[str, str], dict[int, int | None]] = field(default_factory=dict,
                                                                   repr=False)

    @property
    def record(self) -> dict[str, Any]:
        """The runner's record of this results file (``RECORD_KEY``; empty for a run scored by
        hand with ``lm_eval``)."""
        return self.raw.get(RECORD_KEY) or {}

    @property
    def by_construction(self) -> bool:
        """Patching the LAST layer's residual stream replaces the receiver's final hidden state
        at the newest position, so its next token is the donor's by definition (at every step
        for `newest` and `all`): such a run copies the donor."""
        text = self.spec or _spec_of(self)
        if self.role != "patch" or text is None or self.n_layers is None:
            return False
        spec = PatchSpec.parse(text)
        return spec.positions.kind in ("newest", "all") and any(
            part.site == "resid" and part.layer == self.n_layers - 1 for part in spec.parts)

    @property
    def single_layer(self) -> int | None:
        """The layer of a one-layer patch, else None."""
        return self.layers[0] if self.role == "patch" and len(self.layers) == 1 else None

    def samples(self, task: str) -> list[dict[str, Any]]:
        """The task's logged samples, read and checked once."""
        if task not in self._samples:
            self._samples[task] = _read_samples(samples_file(self.results_file, task))
        return self._samples[task]

    def replies(self, task: str) -> dict[int, str]:
        """doc_id -> the model's reply: generated text, or the chosen option of a
        multiple-choice task (highest log-likelihood)."""
        out = {}
        for sample in self.samples(task):
            if self.output_types.get(task) == "generate_until":
                out[sample["doc_id"]] = str(sample["resps"][0][0])
            else:
                scores = [float(r[0]) for r in sample["filtered_resps"]]
                best = max(range(len(scores)), key=scores.__getitem__)
                choices = sample.get("doc", {}).get("choices")
                out[sample["doc_id"]] = str(choices[best]) if choices else f"choice {best}"
        return out

    def docs(self, task: str) -> dict[int, dict[str, Any]]:
        """doc_id -> the logged task row (question, kind, ...), which answer reading uses."""
        return {s["doc_id"]: s["doc"] if isinstance(s.get("doc"), dict) else {}
                for s in self.samples(task)}

    def integers(self, task: str, metric: str) -> dict[int, int | None]:
        """doc_id -> the integer of each reply, read as ``metric`` reads it
        (``leaderboard.metric``); read once per run, as every table compares it again."""
        if (task, metric) not in self._integers:
            read, docs = integer_reader(metric), self.docs(task)
            self._integers[task, metric] = {d: read(reply, docs[d])
                                            for d, reply in self.replies(task).items()}
        return self._integers[task, metric]

    def item_scores(self, task: str, metric: str) -> dict[int, float]:
        """doc_id -> the item's value of ``metric`` as lm-eval logged it (items without it
        are left out)."""
        return {s["doc_id"]: s[metric] for s in self.samples(task)
                if isinstance(s.get(metric), (int, float))}


def _read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LeaderboardError(f"{path}: samples file missing (run with log_samples)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            row["doc_id"], row["resps"], row["filtered_resps"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError):
            raise LeaderboardError(f"{path} line {number}: not an lm-eval sample "
                                   "(half-written file?)") from None
        rows.append(row)
    return rows


def _metrics(raw: dict[str, Any], path: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """task -> metric -> (value, stderr) for every task (groups skipped), in the order of
    ``results`` (the group's order; ``configs`` is sorted alphabetically)."""
    missing = sorted(raw["configs"].keys() - raw["results"].keys())
    if missing:
        raise LeaderboardError(f"{path}: tasks {missing} have a config but no results")
    out: dict[str, dict[str, tuple[Any, Any]]] = {}
    for task, entry in raw["results"].items():
        if task not in raw["configs"]:
            continue
        metrics = {}
        for key, value in entry.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = entry.get(f"{metric}_stderr,{filt}")
            name = metric if filt == "none" else key
            metrics[name] = tuple(v if isinstance(v, (int, float)) else None
                                  for v in (value, stderr))
        out[task] = metrics
    return out


def _model_args(raw: dict[str, Any]) -> dict[str, Any]:
    args = raw.get("config", {}).get("model_args") or {}
    if isinstance(args, str):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(args)
    return args


def _int_tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(int(v) for v in ([value] if isinstance(value, int) else value))


def read_run(path: Path, name: str) -> Run:
    """One results file as a Run (role of a baseline without a runner's record: decided later)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise LeaderboardError(f"{path}: not valid JSON (half-written or truncated?)") from None
    if not isinstance(raw, dict) or not {"results", "configs", "config"} <= raw.keys():
        raise LeaderboardError(f"{path}: not an lm-eval results file (no results/configs/config)")
    output_types = {t: c.get("output_type", "") for t, c in raw["configs"].items()}
    run = Run(name, path, "", None, "", None, metrics=_metrics(raw, path),
              output_types=output_types, raw=raw)
    record = raw.get(RECORD_KEY)
    args = _model_args(raw)
    if record and (not isinstance(record, dict) or record.get("format") != FORMAT):
        found = record.get("format") if isinstance(record, dict) else None
        raise LeaderboardError(f"{path}: a results record of format {found!r}; this version "
                               f"reads format {FORMAT}, so score the variant again")
    try:
        if record:
            run.identity = identity = record["variant"]
            run.role, run.label = identity["role"], identity.get("label")
            run.clean, run.corrupted = record["clean"], record.get("corrupted")
            run.n_layers = record.get("n_layers")
            if identity.get("spec"):
                _restate(run, PatchSpec.parse(identity["spec"]))
                run.direction = identity["direction"]
        elif "corrupted" in args:
            run.role, run.clean = "patch", str(args["pretrained"])
            run.corrupted = str(args["corrupted"])
            run.label = _UNSAFE.sub("_", Path(run.corrupted).name)
            if args.get("spec"):
                _restate(run, PatchSpec.parse(str(args["spec"])))
            else:
                run.site, run.layers = str(args["site"]), _int_tuple(args["layers"])
                run.heads = _int_tuple(args["heads"]) if args.get("heads") is not None else None
                run.positions = str(args.get("positions", "newest"))
                run.spec = _spec_of(run)
            run.direction = str(args.get("direction", "corrupted_to_clean"))
            run.n_layers = _config_layers(run.clean)
        else:
            run.corrupted = str(args.get("peft") or args["pretrained"])  # role decided later
    except (KeyError, TypeError, ValueError) as err:
        raise LeaderboardError(f"{path}: cannot tell which variant this is ({err!r})") from None
    return run


def _spec_of(run: Run) -> str | None:
    """The canonical spec text of a patch run recorded by site, layers, heads and positions."""
    if run.role != "patch" or run.site is None:
        return None
    return str(PatchSpec(run.site, run.layers, run.heads, run.positions or "newest"))


def _restate(run: Run, spec: PatchSpec) -> None:
    """Fill a run's site, layers, heads and positions from its spec (site and heads only when
    every part shares them)."""
    sites, heads = {p.site for p in spec.parts}, {p.heads for p in spec.parts}
    run.site = next(iter(sites)) if len(sites) == 1 else None
    run.heads = next(iter(heads)) if len(heads) == 1 else None
    run.layers, run.positions, run.spec = spec.layers, str(spec.positions), str(spec)


def _config_layers(model_dir: str) -> int | None:
    cfg = Path(model_dir) / "config.json"
    return json.loads(cfg.read_text()).get("num_hidden_layers") if cfg.is_file() else None


def _settle_baselines(runs: list[Run]) -> None:
    """Give a baseline without a runner's record its role by matching the patch runs' models."""
    cleans = {r.clean for r in runs if r.role}
    labels = {r.corrupted: r.label for r in runs if r.role == "patch"}
    for run in runs:
        if run.role:
            continue
        if run.corrupted in cleans:
            run.role, run.clean, run.corrupted = "clean", run.corrupted, None  # type: ignore[assignment]
        elif run.corrupted in labels:
            run.role, run.label = "corrupted", labels[run.corrupted]
            run.clean = next(iter(cleans))
        else:
            raise LeaderboardError(f"{run.results_file}: baseline {run.corrupted} is neither the "
                                   "clean nor a corrupted model of the patch runs in this folder")


def _check_one_pair(runs: list[Run]) -> None:
    """One clean model per folder, and one model per corrupted label (and vice versa)."""
    first = runs[0]
    by_label: dict[str, Run] = {}
    seen: dict[tuple[Any, ...], Run] = {}
    for run in runs:
        if run.clean != first.clean:
            raise LeaderboardError(
                f"{run.results_file}: clean model {run.clean} differs from {first.clean} "
                f"({first.results_file}); mixed model pairs in one folder")
        if run.label is not None:
            other = by_label.setdefault(run.label, run)
            if other.corrupted != run.corrupted:
                raise LeaderboardError(
                    f"{run.results_file}: corrupted model {run.corrupted} differs from "
                    f"{other.corrupted} ({other.results_file}) under label {run.label!r}")
        key = (run.role, run.label, run.spec, run.direction)
        if key in seen:
            raise LeaderboardError(f"{run.results_file}: same variant as "
                                   f"{seen[key].results_file}; keep one")
        seen[key] = run
    labels_by_path: dict[str | None, str | None] = {}
    for run in runs:
        if run.role != "clean" and labels_by_path.setdefault(run.corrupted, run.label) != run.label:
            raise LeaderboardError(f"{run.results_file}: model {run.corrupted} appears under two "
                                   f"labels ({labels_by_path[run.corrupted]!r}, {run.label!r})")


def load_runs(results_dir: str | Path) -> list[Run]:
    """Every variant folder under ``results_dir`` (newest results file per folder), checked."""
    root = Path(results_dir)
    if not root.is_dir():
        raise LeaderboardError(f"{root}: no such results folder")
    folders = sorted({p.parent for p in root.rglob("results_*.json")
                      if not any(part.startswith(".") for part in p.relative_to(root).parts)})
    if not folders:
        raise LeaderboardError(f"{root}: no lm-eval results files (results_*.json) found")
    runs = []
    for folder in folders:
        path = latest_results(folder)
        rel = folder.relative_to(root).as_posix()
        runs.append(read_run(path, root.name if rel == "." else rel))  # type: ignore[arg-type]
    for run in runs:  # read every samples file now: a broken one fails before any output
        for task in run.output_types:
            run.samples(task)
    _settle_baselines(runs)
    _check_one_pair(runs)
    if not any(r.role == "clean" for r in runs):
        raise LeaderboardError(f"{root}: no clean baseline run; agreement needs one")
    return runs
