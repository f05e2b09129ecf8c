"""Cooperating workers: several ``leaderboard.sweep`` processes on one config and one output
folder, without ``--shard``, run every variant exactly once and leave the files one process
leaves; a worker killed inside a unit of work has that unit finished by the others; and the
claims themselves (``leaderboard.claims``): one winner, a dead holder's claim taken over."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from leaderboard_fixtures import tiny_config, tiny_pair, write_yaml
from processes import Finished, run_together

from formats.failpoints import ENV, FAILPOINT_EXIT
from leaderboard import claims
from leaderboard.store import latest_results

REPO = Path(__file__).resolve().parents[1]
BASE_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
RUNS = itertools.count()  # one log folder per run of workers
PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"}]  # 6 patches + 2 baselines


def workers(config: Path, count: int = 1, failpoint: str | None = None) -> list[Finished]:
    """Run ``count`` sweep workers on one config at once, each printing to its own files."""
    env = {k: v for k, v in os.environ.items() if k != ENV} | BASE_ENV
    if failpoint:
        env[ENV] = failpoint
    command = [sys.executable, "-m", "leaderboard.sweep", "--config", str(config)]
    logs = config.parent / "logs" / f"{config.stem}-{next(RUNS)}"
    return run_together([command] * count, logs, REPO, env, timeout=600)


def ran(finished: list[Finished]) -> list[int]:
    """The number of variants each worker says it ran (each must have succeeded)."""
    assert all(f.returncode == 0 for f in finished), [f.err[-2000:] for f in finished]
    return [int(re.search(r"^(\d+) ran", f.out, re.M).group(1)) for f in finished]


def scored(out: Path) -> dict[str, tuple[dict, dict[str, bytes]]]:
    """Per variant folder: lm-eval's metrics and the bytes of every samples file."""
    found = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert len(list(folder.glob("results_*.json"))) == 1, folder  # scored once
        results = json.loads(latest_results(folder).read_text())["results"]
        samples = {p.name.split("_20")[0]: p.read_bytes()
                   for p in sorted(folder.glob("samples_*.jsonl"))}
        found[folder.name] = (results, samples)
    return found


@pytest.mark.slow
def test_three_workers_share_a_sweep_and_finish_a_dead_workers_unit(tmp_path: Path) -> None:
    clean, over = tiny_pair(tmp_path / "models")

    def config(name: str) -> Path:
        out = tmp_path / name
        return write_yaml(tmp_path / f"{name}.yaml", tiny_config(clean, over, out,
                                                                 patches=PATCHES,
                                                                 generate_together=2))

    assert ran(workers(config("one"))) == [8]
    want = scored(tmp_path / "one")

    each = ran(workers(config("three"), 3))
    assert sum(each) == 8 and max(each) < 8, each  # every variant once, shared between them
    assert scored(tmp_path / "three") == want
    assert not list((tmp_path / "three" / claims.CLAIMS).glob("*.claim"))  # all released

    [killed] = workers(config("killed"), failpoint="sweep.before_results@3")
    assert killed.returncode == FAILPOINT_EXIT  # died inside a unit, holding its claim
    held = list((tmp_path / "killed" / claims.CLAIMS).glob("*.claim"))
    assert len(held) == 1 and claims.is_stale(held[0])
    each = ran(workers(config("killed"), 2))
    assert sum(each) == 8 - 2, each  # the two it finished are kept, its unit is finished
    assert scored(tmp_path / "killed") == want


def test_one_claim_wins_and_a_dead_holders_claim_is_taken_over(tmp_path: Path) -> None:
    assert claims.try_claim(tmp_path, "unit") and claims.try_claim(tmp_path, "unit")  # ours
    path = claims.claim_path(tmp_path, "unit")
    holder = claims.read_holder(path)
    assert holder == claims.Holder.me() and not claims.is_stale(path)
    # a holder on this host whose process is gone: stale, and taken over by one rename
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(json.dumps({"host": holder.host, "pid": int(dead.stdout), "started": "1"}))
    assert claims.is_stale(path) and claims.try_claim(tmp_path, "unit")
    assert claims.read_holder(path) == claims.Holder.me()
    assert len(list(path.parent.glob("unit.claim.dead-*"))) == 1
    # a live holder on another host: not stale until it falls silent
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": None}))
    assert not claims.try_claim(tmp_path, "unit")
    os.utime(path, (0, 0))
    assert claims.is_stale(path) and claims.try_claim(tmp_path, "unit")
    claims.release(tmp_path, "unit")
    assert not path.exists()
