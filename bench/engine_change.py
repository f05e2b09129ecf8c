"""The engine now against the engine at another git revision, on the same specs, in one run.

    .venv/bin/python bench/engine_change.py --base f88deaf [--rounds 7]

The base revision's `patching/` is exported to a temporary folder and imported as a second
package (`patching_base`), so both engines run in one process on the same models and prompts,
interleaved round by round: a busy spell on the shared cores hits both alike. Specs are those
`bench/patching.py` times (each positions mode at several sites and layers, and a sweep over
every layer), in the spec forms both revisions take. Times are the best of the rounds, in
process CPU time; the tokens of both engines must be equal. Writes
bench/results/engine_change.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

import patching  # noqa: E402
from bench.patching import NEW_TOKENS, prompts, tiny_pair  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "engine_change.md"


def load_base(revision: str, into: Path) -> object:
    """The revision's `patching` package, importable as `patching_base`."""
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "patching"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        target = into / "patching_base" / Path(name).relative_to("patching")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"{revision}:{name}"], cwd=REPO,
                                          check=True, capture_output=True).stdout)
    spec = importlib.util.spec_from_file_location(
        "patching_base", into / "patching_base" / "__init__.py",
        submodule_search_locations=[str(into / "patching_base")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["patching_base"] = module
    spec.loader.exec_module(module)
    return module


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def one_spec(engine: Any, receiver: Any, donor: Any, ids: torch.Tensor, mask: torch.Tensor,
             spec: Any) -> Callable[[], object]:
    return lambda: engine.patched_generate(receiver, donor, ids, spec, mask,
                                           max_new_tokens=NEW_TOKENS)


def sweep(engine: Any, receiver: Any, donor: Any, ids: torch.Tensor, mask: torch.Tensor,
          specs: list[Any]) -> Callable[[], object]:
    return lambda: engine.sweep_generate(receiver, donor, ids, specs, mask,
                                         max_new_tokens=NEW_TOKENS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the engine to compare")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_base(args.base, Path(tmp))
        for layers in (6, 4):
            receiver, donor = tiny_pair(layers)
            ids, mask = prompts()
            sites = (("resid", 0), ("resid", layers // 2), ("resid", layers - 1),
                     ("attn", layers - 1), ("mlp", layers - 1), ("head", layers - 1))
            cases = [(site, layer, [0, 2] if site == "head" else None, positions)
                     for site, layer in sites for positions in ("all", "newest")]
            runs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
            for site, layer, heads, positions in cases:
                label = f"`{positions}`, {site} layer {layer}" + (" heads 0,2" if heads else "")
                runs[label] = tuple(one_spec(m, receiver, donor, ids, mask,
                                             m.PatchSpec(site, [layer], heads, positions))
                                    for m in (base, patching))
            for positions in ("newest", "all"):
                runs[f"sweep, resid every layer, `{positions}`"] = tuple(
                    sweep(m, receiver, donor, ids, mask, m.every_layer("resid", layers, positions))
                    for m in (base, patching))
            for old, new in runs.values():  # warm-up, and the two engines agree
                a, b = old(), new()
                a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
                assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
            best = {label: [float("inf"), float("inf")] for label in runs}
            for _ in range(args.rounds):
                for label, pair in runs.items():
                    for i, fn in enumerate(pair):
                        best[label][i] = min(best[label][i], cpu(fn))
            rows += [f"| {layers} | {label} | {a:.3f} s | {b:.3f} s | {b / a:.3f}x |"
                     for label, (a, b) in best.items()]
    ratios = [float(row.rsplit("|", 2)[-2].strip()[:-1]) for row in rows]
    lines = [
        "# The engine against a base revision",
        "",
        f"Written by `bench/engine_change.py --base {args.base}` in one run: torch "
        f"{torch.__version__}, 1 thread, {platform.processor() or platform.machine()}; the "
        "pairs and prompts of `bench/patching.py` (tiny random Qwen3, 8 left-padded prompts x "
        f"{NEW_TOKENS} new tokens, float32). Both engines in one process, interleaved, best of "
        f"{args.rounds} rounds in process CPU time; their tokens are equal in every row.",
        "",
        "| layers | run | base | now | now / base |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"now / base: median {sorted(ratios)[len(ratios) // 2]:.3f}x, range "
        f"{min(ratios):.3f}x-{max(ratios):.3f}x. Bench wall time: "
        f"{time.perf_counter() - started:.0f} s.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
