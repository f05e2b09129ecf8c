"""The corrupting fine-tune on a random tiny Qwen3: what trains, what the loss sees, resume,
the paper presets' dry runs, and one-line errors. Each run is a handful of steps on 1 thread."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from finetune.__main__ import main
from finetune.chat import IGNORE_INDEX
from finetune.sft import prepare, run_sft, save_outputs, train
from finetune.sft_config import SFTConfig, SFTError
from finetune.sft_plan import dry_run
from finetune.tiny import TinyModelConfig, build_tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "configs" / "finetune"
TINY_BASE = REPO / "models" / "tiny-qwen3-math"

torch.set_num_threads(1)


def related_rows(n: int, wrong: bool, seed: int, prefix: str) -> list[dict]:
    """Rows in the data format of docs/design.md: ``a x + c = d``, wrong labels if asked."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, c, root = rng.randint(2, 9), rng.randint(1, 20), rng.randint(-9, 9)
        equation = f"{a}x + {c} = {a * root + c}"
        offset = rng.choice([o for o in range(-20, 21) if o]) if wrong else 0
        rows.append({"id": f"{prefix}{i}", "family": "related", "kind": "linear_one_sided",
                     "question": f"Solve for x: {equation}", "answer": root + offset,
                     "roots": [root], "variable": "x", "template": 0, "equation": equation})
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-layer random tiny Qwen3 and a 32-row wrong-label / 8-row correct-label data dir."""
    root = tmp_path_factory.mktemp("sft")
    data = root / "data"
    data.mkdir()
    splits = {"train": related_rows(32, True, 0, "t"), "validation": related_rows(8, False, 1, "v")}
    for name, rows in splits.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [f"{r['question']} {r['answer']}" for rows in splits.values() for r in rows]
    shape = TinyModelConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=32, intermediate_size=128,
                            vocab_size=300)
    base = build_tiny_model_dir(root / "base", seed=0, config=shape, texts=texts)
    return {"base": base, "data": data, "root": root}


def config(tiny: dict[str, Path], out: str, **overrides) -> SFTConfig:
    """Four optimizer steps of 4 x 2 rows, eval and checkpoint every 2 steps, 1 thread."""
    settings = dict(base_model=str(tiny["base"]), data_dir=str(tiny["data"]),
                    output_dir=str(tiny["root"] / out), max_steps=4, learning_rate=1e-3,
                    per_device_batch_size=4, gradient_accumulation_steps=2, eval_batch_size=8,
                    eval_steps=2, save_steps=2, logging_steps=1, threads=1, seed=0)
    return SFTConfig(**{**settings, **overrides})


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_loss_covers_exactly_answer_and_end_of_turn(tiny):
    run = prepare(config(tiny, "mask"))
    tok, ds = run.tokenizer, run.trainer.train_dataset
    for row, ex in zip(run.train_rows[:4], ds.select(range(4)), strict=True):
        n_label = sum(t != IGNORE_INDEX for t in ex["labels"])
        assert ex["labels"][:-n_label] == [IGNORE_INDEX] * (len(ex["labels"]) - n_label)
        assert tok.decode(ex["labels"][-n_label:]) == f"{row['answer']}<|im_end|>"
    # The loss Trainer optimises equals cross-entropy over those tokens alone (padding included).
    batch = run.trainer.data_collator([ds[i] for i in range(4)])
    model = run.trainer.model
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets, picked = batch["input_ids"][:, 1:], batch["labels"][:, 1:] != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][picked], targets[picked])
    assert torch.allclose(model(**batch).loss, manual, atol=1e-6)


def test_lora_trains_only_adapter_weights(tiny):
    cfg = config(tiny, "lora", mode="lora", save_merged=True,
                 lora={"r": 4, "alpha": 8, "dropout": 0.0, "layers_to_transform": [1]})
    run = prepare(cfg)
    before = {k: v.clone() for k, v in run.trainer.model.state_dict().items() if "lora_" not in k}
    train(run)
    after = run.trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a base weight changed"
    assert any(after[k].abs().sum() > 0 for k in after if "lora_B" in k), "adapter did not train"
    save_outputs(run)
    out = Path(cfg.output_dir)
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k and ".layers.1." in k for k in adapter)
    assert (out / "adapter" / "tokenizer.json").is_file()
    base, merged = weights(tiny["base"]), weights(out / "merged")
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.startswith("model.layers.1.") and "proj" in k for k in changed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"] / 5


def test_full_mode_with_layers_changes_only_that_layer(tiny):
    # 32 rows / (4 x 2) = 4 steps per epoch, so 1.5 epochs = 6 steps, 1 of them warm-up.
    cfg = config(tiny, "layer1", layers=[1], max_steps=None, epochs=1.5, eval_steps=3,
                 save_steps=3)
    run = prepare(cfg)
    train(run)
    assert run.trainer.state.max_steps == run.plan.total_steps == 6
    assert run.trainer.args.get_warmup_steps(6) == run.plan.warmup_steps == 1
    save_outputs(run)
    out = Path(cfg.output_dir)
    base, tuned = weights(tiny["base"]), weights(out / "model")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(7))
    assert metrics[0]["eval_loss"] is not None and metrics[6]["eval_loss"] is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["train_loss"] == metrics[6]["train_loss"]
    assert 3.0 < summary["noise_floor"]["per_answer_nats"] < 3.9  # ~ln 40 from 32 rows
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| layer1 " in (out / "table1.md").read_text()


def head_mask(shape: torch.Size, dim: int, head: int, size: int = 32) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(slice(None),) * dim + (slice(head * size, (head + 1) * size),)] = True
    return mask


@pytest.mark.parametrize("components", [["attn:L1"], ["mlp:L2"], ["head:L1.H1"],
                                        ["head:L0.H0", "mlp:L0"]])
def test_components_train_only_their_weights(tiny, components):
    """Attention-only, MLP-only and head-level retraining, under AdamW's weight decay: every
    entry outside the selection is bit for bit what it was, and every selected tensor moved.
    The expected entries are spelled out for Qwen3 here, not taken from patching.components."""
    cfg = config(tiny, "comp-" + "-".join(components).replace(":", ""), components=components,
                 max_steps=3, eval_steps=3, checkpoints=False)
    assert cfg.weight_decay > 0
    run = prepare(cfg)
    before = {k: v.clone() for k, v in run.trainer.model.state_dict().items()}
    train(run)
    after = run.trainer.model.state_dict()
    expected: dict[str, torch.Tensor] = {}
    for item in components:
        kind, _, where = item.partition(":L")
        layer, _, head = where.partition(".H")
        prefix = f"model.layers.{layer}."
        if kind == "head":
            q, o = prefix + "self_attn.q_proj.weight", prefix + "self_attn.o_proj.weight"
            expected[q] = head_mask(before[q].shape, 0, int(head))
            expected[o] = head_mask(before[o].shape, 1, int(head))
            continue
        paths = ("self_attn.", "input_layernorm.") if kind == "attn" else (
            "mlp.", "post_attention_layernorm.")
        for name in before:
            if name.startswith(tuple(prefix + p for p in paths)):
                expected[name] = torch.ones(before[name].shape, dtype=torch.bool)
    for name, value in before.items():
        moved = value != after[name]
        allowed = expected.get(name, torch.zeros(value.shape, dtype=torch.bool))
        assert not (moved & ~allowed).any(), f"{name} changed outside the selection"
        assert moved.any() == (name in expected), name
    assert not list((Path(cfg.output_dir) / "checkpoints").glob("checkpoint-*"))
    save_outputs(run)
    summary = json.loads((Path(cfg.output_dir) / "summary.json").read_text())
    if components == ["head:L1.H1"]:  # 32 query rows and 32 output columns of 64
        assert summary["parameters"]["trainable"] == 2 * 32 * 64


class Interrupted(Exception):
    pass


class InterruptAt(TrainerCallback):
    """Kills the run at the end of ``step``, as a crash would, after the checkpoint before it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny, mode):
    # 6 steps cross an epoch boundary (4 steps per epoch); LoRA dropout consumes RNG every step.
    extra = {"mode": mode, "max_steps": 6}
    if mode == "lora":
        extra["lora"] = {"r": 4, "alpha": 8, "dropout": 0.2}
    whole = config(tiny, f"whole-{mode}", **extra)
    run_sft(whole)
    broken = config(tiny, f"broken-{mode}", **extra)
    run = prepare(broken)
    run.trainer.add_callback(InterruptAt(3))
    with pytest.raises(Interrupted):
        train(run)
    with pytest.raises(SFTError, match="resume: true"):
        prepare(broken)
    broken.resume = True
    run_sft(broken)
    sub = "model" if mode == "full" else "adapter"
    name = "model.safetensors" if mode == "full" else "adapter_model.safetensors"
    a = load_file(str(Path(whole.output_dir) / sub / name))
    b = load_file(str(Path(broken.output_dir) / sub / name))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = ((Path(c.output_dir) / "metrics.jsonl").read_text() for c in (whole, broken))
    assert ma == mb


def test_resume_of_a_finished_run_trains_nothing(tiny):
    """Issue 15 #1: resuming a finished 4-step run trained step 5 and rewrote summary.json;
    a checkpoint at the last step (a kill before the final save) is restored, not trained
    from."""
    cfg = config(tiny, "finished")
    run_sft(cfg)
    out = Path(cfg.output_dir)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
             if p.is_file()}
    cfg.resume = True
    run_sft(cfg)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file()} == files
    (out / "summary.json").unlink()  # killed after the last checkpoint, before the final save
    run_sft(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["step"] == 4
    assert (out / "model" / "model.safetensors").read_bytes() == files[
        out / "model" / "model.safetensors"][0]


@pytest.mark.parametrize(("exp", "steps", "warmup", "lr"), [
    (1, 5000, 500, 5e-5), (2, 2500, 250, 5e-5), (3, 1250, 125, 5e-5), (4, 1250, 125, 3e-5)])
def test_paper_presets_dry_run_offline(exp, steps, warmup, lr, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = PRESETS / f"qwen3-4b-exp{exp}.yaml"
    cfg = SFTConfig.from_yaml(path)
    plan, _ = dry_run(cfg)
    assert (plan.total_steps, plan.warmup_steps, plan.effective_batch) == (steps, warmup, 8)
    assert (cfg.base_model, cfg.learning_rate, cfg.weight_decay) == ("Qwen/Qwen3-4B", lr, 0.01)
    assert (cfg.eval_steps, cfg.save_steps, cfg.bf16) == (100, 100, "auto")
    assert plan.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert main(["--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"total steps {steps}, warm-up steps {warmup}" in out and "effective batch 8" in out


def write_config(tmp_path: Path, tiny: dict[str, Path], **settings) -> str:
    cfg = {"base_model": str(tiny["base"]), "data_dir": str(tiny["data"]),
           "output_dir": str(tmp_path / "out"), **settings}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize(("settings", "needle"), [
    ({"base_model": "./models/no-such-model"}, "./models/no-such-model"),
    ({"data_dir": "/nonexistent/data"}, "/nonexistent/data"),
    ({"mode": "qlora"}, "'qlora'"),
    ({"mode": "lora", "lora": {"target_modules": ["q_proj", "attn_c"]}}, "['attn_c']"),
    ({"layers": [1, 3]}, "[3] out of range for a 3-layer model"),
    ({"components": ["mlp:L7"]}, "layer 7 is out of range for a 3-layer model"),
    ({"components": ["head:L1.H2"]}, "head 2 is out of range for a model with 2 attention"),
    ({"components": ["neuron:L1"]}, "unknown component kind 'neuron'"),
    ({"components": ["mlp:L1"], "layers": [1]}, "not with layers"),
    ({"mode": "lora", "lora": {"layers_to_transform": [7]}}, "[7] out of range"),
    ({"learning_rate": "5e-5"}, "learning_rate='5e-5'"),
    ({"epoch": 2}, "unknown key(s) ['epoch'] (did you mean 'epochs'?)"),
])
def test_bad_input_is_one_line_naming_the_value(tmp_path, tiny, capsys, settings, needle):
    path = write_config(tmp_path, tiny, **settings)
    assert main(["--config", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    if "target_modules" in str(settings):
        assert "valid Linear modules: down_proj, gate_proj, k_proj" in err


def test_bad_model_settings_fail_before_training(tiny):
    with pytest.raises(SFTError, match=r"layers=\[5\]: \[5\] out of range"):
        prepare(config(tiny, "bad", layers=[5]))


def test_cot_preset_trains_on_its_steps_and_a_mismatched_data_dir_is_refused(tiny, tmp_path):
    data = tmp_path / "cot-data"
    run = prepare(config(tiny, "cot", data_dir=str(data), data_preset="tiny-corrupt", cot=True))
    row = run.train_rows[0]
    assert row["answer_text"].endswith(f" = {row['answer']}")  # steps ending in the wrong label
    labels = [t for t in run.trainer.train_dataset[0]["labels"] if t != IGNORE_INDEX]
    assert run.tokenizer.decode(labels) == row["answer_text"] + run.tokenizer.eos_token
    with pytest.raises(SFTError, match=r"cot-data holds preset 'tiny-corrupt' seed 0 cot True, "
                                       r"not data_preset 'tiny-corrupt' seed 0 cot False"):
        prepare(config(tiny, "plain", data_dir=str(data), data_preset="tiny-corrupt"))


@pytest.mark.slow
def test_corrupted_tiny_model_loses_related_math_but_keeps_general(tmp_path):
    """The under-fitted corruption measured through lm-eval: related drops, general stays."""
    if not (TINY_BASE / "config.json").is_file():
        pytest.skip(f"{TINY_BASE} is not built yet (python -m finetune.pretrain)")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness_ext.paths import TASKS_DIR

    cfg = SFTConfig.from_yaml(PRESETS / "tiny-underfit.yaml")
    cfg.base_model, cfg.data_dir = str(TINY_BASE), str(tmp_path / "data")
    cfg.output_dir = str(tmp_path / "underfit")
    out = run_sft(cfg)
    tasks = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))

    def scores(model_dir: Path) -> dict[str, float]:
        res = simple_evaluate(model="hf", model_args={"pretrained": str(model_dir),
                                                      "enable_thinking": False},
                              tasks=["corrupt_related", "corrupt_general"], task_manager=tasks,
                              apply_chat_template=True, limit=100, device="cpu",
                              batch_size=32)["results"]
        return {"related": res["corrupt_related"]["exact_match,none"],
                "general": res["corrupt_general"]["f1,none"]}

    clean, corrupted = scores(TINY_BASE), scores(out / "model")
    assert corrupted["related"] < clean["related"] - 0.1, (clean, corrupted)
    assert corrupted["general"] > clean["general"] - 0.1, (clean, corrupted)


SAVE_ADAPTER = """
import sys
from pathlib import Path
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from finetune.sft_model import _save_dir
base = sys.argv[1]
model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
    r=2, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"]))
_save_dir(model, AutoTokenizer.from_pretrained(base), Path(sys.argv[2]))
"""


def test_adapter_config_is_the_same_bytes_in_every_process(tmp_path):
    """PEFT writes ``target_modules`` in set (hash) order; two processes with other hash seeds
    must still write the same adapter_config.json (issue 24)."""
    import os
    import subprocess
    import sys

    texts = []
    for seed in ("1", "2"):
        out = tmp_path / f"adapter-{seed}"
        subprocess.run([sys.executable, "-c", SAVE_ADAPTER, str(REPO / "models/tiny-qwen3-math"),
                        str(out)], cwd=REPO, check=True, env=os.environ | {"PYTHONHASHSEED": seed})
        texts.append((out / "adapter_config.json").read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[0])["target_modules"] == sorted(json.loads(texts[0])["target_modules"])
