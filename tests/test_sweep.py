"""Sweep runner: config checks, variant expansion and hashes, resume after a kill, --shard.

Baseline variants run for real through lm-eval (tiny random models, 2 items per task, 4 new
tokens). Patch variants need the real ``patched_qwen`` (issue #5): see test_sweep_patched.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from leaderboard_fixtures import perturbed, tiny_config, tiny_pair, write_yaml

from leaderboard import loading, store, sweep
from leaderboard.config import PatchBlock, SweepConfig, SweepConfigError, resolve_indices
from leaderboard.results import load_runs
from leaderboard.variants import expand, model_args, shard, variant_hash

PATCHES = [{"sites": ["resid", "attn", "mlp"], "layers": "all"},
           {"sites": "head", "layers": "last", "heads": "all"}]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Clean, 'over' and 'under' tiny models (three baselines make a resumable sweep)."""
    root = tmp_path_factory.mktemp("models")
    clean, over = tiny_pair(root)
    return clean, over, perturbed(clean, root / "under", seed=3)


def test_config_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("clean: a\ncorrupted: b\noutput_dir: o\n"
                   "patches: [{sites: [resid], layers: x}]\n")
    with pytest.raises(SweepConfigError, match=r"bad\.yaml: patches\[0\]: layers='x'") as err:
        SweepConfig.from_yaml(bad)
    assert "\n" not in str(err.value)
    bad.write_text("clean: a\ncorrupted: b\noutput_dir: o\nlayer: 3\n")
    with pytest.raises(SweepConfigError, match=r"unknown key\(s\) \['layer'\]"):
        SweepConfig.from_yaml(bad)
    with pytest.raises(SweepConfigError, match="unknown value 'ffn'"):
        PatchBlock(sites=["ffn"])
    bad.write_text("clean: a\ncorrupted: b\noutput_dir: o\ngenerate_together: 0\n")
    with pytest.raises(SweepConfigError, match=r"bad\.yaml: generate_together=0: expected an "
                       r"integer >= 1 \(1: each variant generates alone\)$"):
        SweepConfig.from_yaml(bad)
    with pytest.raises(SweepConfigError, match="out of range"):
        resolve_indices("layers", [5], 4)
    assert resolve_indices("layers", "1-2", 4) == [1, 2]
    assert resolve_indices("layers", -1, 4) == resolve_indices("layers", "last", 4) == [3]


def test_expansion_names_shards_and_hashes() -> None:
    cfg = SweepConfig(clean="c", corrupted=["runs/tiny-over"], output_dir="o", patches=PATCHES)
    variants = expand(cfg, n_layers=2, n_heads=2)
    names = [v.name for v in variants]
    assert names[:2] == ["clean", "corrupted-tiny_over"]
    assert "patch-tiny_over-resid-L0-newest-into_clean" in names
    assert "patch-tiny_over-head-L1-H1-newest-into_clean" in names
    assert len(names) == len(set(names)) == 2 + 3 * 2 + 2  # one layer / one head at a time
    together = SweepConfig(clean="c", corrupted="x", output_dir="o",
                           patches=[{"sites": "resid", "layers": "0-1", "together": True}])
    assert [v.name for v in expand(together, 2, 2)][-1] == "patch-x-resid-L0_1-newest-into_clean"

    specs = SweepConfig(clean="c", corrupted="x", output_dir="o", patches=[
        {"specs": ["mlp:L1 + attn:L0@steps[1:3]", "head:L1.H0,1@prompt[-2:]"],
         "directions": ["corrupted_to_clean", "clean_to_corrupted"]},
        {"sites": "k", "layers": "last", "positions": ["prompt[-1:]"]}])
    multi = expand(specs, 2, 4, n_kv_heads=2)[2:]
    assert [(v.name, v.spec, v.site, v.layers, v.heads, v.positions) for v in multi] == [
        ("patch-x-attnL0+mlpL1@steps1_3-into_clean", "attn:L0 + mlp:L1@steps[1:3]", None,
         (0, 1), None, "steps[1:3]"),
        ("patch-x-headL1.H0_1@promptn2_-into_clean", "head:L1.H0,1@prompt[-2:]", "head", (1,),
         (0, 1), "prompt[-2:]"),
        ("patch-x-attnL0+mlpL1@steps1_3-into_corrupted", "attn:L0 + mlp:L1@steps[1:3]", None,
         (0, 1), None, "steps[1:3]"),
        ("patch-x-headL1.H0_1@promptn2_-into_corrupted", "head:L1.H0,1@prompt[-2:]", "head",
         (1,), (0, 1), "prompt[-2:]"),
        ("patch-x-k-L1-H0-promptn1_-into_clean", "k:L1.H0@prompt[-1:]", "k", (1,), (0,),
         "prompt[-1:]"),
        ("patch-x-k-L1-H1-promptn1_-into_clean", "k:L1.H1@prompt[-1:]", "k", (1,), (1,),
         "prompt[-1:]"),  # k heads are the 2 KV groups, not the 4 query heads
    ]
    assert model_args(multi[0], "c", {"x": "x"}, {}, 8)["spec"] == "attn:L0 + mlp:L1@steps[1:3]"

    parts = [shard(variants, i, 3) for i in range(3)]
    assert sorted(v.name for p in parts for v in p) == sorted(names)  # disjoint and complete
    assert parts == [shard(variants, i, 3) for i in range(3)]  # deterministic

    prints = {"clean": "c1", "tiny_over": "o1"}
    h = variant_hash(cfg, variants[0], prints, "t1")
    assert h == variant_hash(cfg, variants[0], prints, "t1")
    assert h == variant_hash(cfg, variants[0], prints | {"tiny_over": "o2"}, "t1")  # not used
    assert h != variant_hash(cfg, variants[0], prints | {"clean": "c2"}, "t1")
    assert h != variant_hash(cfg, variants[0], prints, "t2")  # task YAML or data changed
    cfg.limit = 3
    assert h != variant_hash(cfg, variants[0], prints, "t1")


def test_killed_sweep_resumes_and_skips_finished(models, tmp_path, monkeypatch) -> None:
    clean, over, under = models
    cfg = tiny_config(clean, {"over": str(over), "under": str(under)}, tmp_path / "out")
    loads: list[str] = []
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda p, *a: loads.append(p) or real_load(p, *a))

    real_replace = os.replace
    moved: list[str] = []

    def kill_on_second_results(src, dst):  # the process dies while moving variant 2 in
        if Path(dst).name.startswith("results_"):
            moved.append(str(dst))
            if len(moved) == 2:
                raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", kill_on_second_results)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(cfg, progress=False)
    monkeypatch.setattr(store.os, "replace", real_replace)
    out = tmp_path / "out"
    first = store.latest_results(out / "clean")
    assert first is not None and store.latest_results(out / "corrupted-over") is None
    assert list((out / "corrupted-over").glob("samples_*.jsonl"))  # half-moved: not finished
    mtime = first.stat().st_mtime_ns

    loads.clear()
    outcome = sweep.run_sweep(cfg, progress=False)
    assert outcome.skipped == ["clean"]
    assert outcome.ran == ["corrupted-over", "corrupted-under"] and not outcome.failed
    assert first.stat().st_mtime_ns == mtime
    assert sorted(loads) == sorted([str(over), str(under)])  # each model once, clean not needed
    assert not list(out.glob(".tmp-*"))

    truncated = store.latest_results(out / "corrupted-under")
    truncated.write_text(truncated.read_text()[:100])  # a half-written results file
    outcome = sweep.run_sweep(cfg, progress=False)
    assert outcome.ran == ["corrupted-under"]
    assert sorted(outcome.skipped) == ["clean", "corrupted-over"]
    assert len(store.results_files(out / "corrupted-under")) == 1


def _result_dirs(out: Path) -> list[str]:
    """The runs' folders, without the workers' claims (``.claims``)."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def test_shards_from_the_cli(models, tmp_path, monkeypatch, capsys) -> None:
    clean, over, under = models
    cfg = tiny_config(clean, {"over": str(over), "under": str(under)}, tmp_path / "out")
    path = write_yaml(tmp_path / "sweep.yaml", cfg)
    assert sweep.main(["--config", str(path), "--shard", "1/2"]) == 0
    assert _result_dirs(tmp_path / "out") == ["corrupted-over"]

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert sweep.main(["--config", str(path), "--shard", "auto"]) == 0
    assert "LOCAL_RANK" not in os.environ  # simple_evaluate would return None on LOCAL_RANK>0
    assert _result_dirs(tmp_path / "out") == ["clean", "corrupted-over", "corrupted-under"]
    assert sweep.main(["--config", str(path)]) == 0
    assert "0 ran, 3 already finished, 0 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep.main(["--config", str(path), "--shard", "2/2"])


def test_lora_baseline_is_reproduced_by_its_recorded_model_args(models, tmp_path) -> None:
    """A LoRA corrupted model is merged for the sweep; the results file records
    ``pretrained=BASE,peft=ADAPTER``, and plain ``--model hf`` with those args gives the same
    replies: the variant is scored like an ordinary model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness_ext.paths import TASKS_DIR

    clean = models[0]
    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(clean),
                          LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                     init_lora_weights=False))  # random B: a visible change
    lora.save_pretrained(tmp_path / "adapter")
    cfg = tiny_config(clean, {"lora": str(tmp_path / "adapter")}, tmp_path / "out",
                      tasks=["corrupt_related"])
    assert sweep.run_sweep(cfg, progress=False).ran == ["clean", "corrupted-lora"]

    runs = {r.name: r for r in load_runs(tmp_path / "out")}
    args = runs["corrupted-lora"].raw["config"]["model_args"]
    assert (args["pretrained"], args["peft"]) == (str(clean), str(tmp_path / "adapter"))
    again = simple_evaluate(
        model="hf", model_args=args | {"device": "cpu"}, tasks=["corrupt_related"],
        limit=cfg.limit, gen_kwargs=cfg.gen_kwargs, apply_chat_template=True,
        task_manager=TaskManager(include_defaults=False, include_path=str(TASKS_DIR)))
    replies = {s["doc_id"]: s["resps"][0][0] for s in again["samples"]["corrupt_related"]}
    assert replies == runs["corrupted-lora"].replies("corrupt_related")
    assert replies != runs["clean"].replies("corrupt_related")
