"""The prepared GPU check: everything this project wants to know from a GPU, in one run of at
most 8 minutes on one H100 (``bench/gpu_check.sh``; docs/scale-out.md).

    bash bench/gpu_check.sh              # on the GPU machine: bench/results/gpu.md
    bash bench/gpu_check.sh --rehearse   # anywhere, every size shrunk: gpu-rehearsal.md

Sections, each timed; a failing section is reported in the file and the others go on:

1. **engine = reference on the device.** A random Qwen3 pair (3 layers): ``patched_generate``
   against the naive definition (``patching.reference.naive_generate``) at every site and both
   position modes, in float32 (tokens must be equal) and bfloat16 (the share of equal tokens,
   engine against reference, and bf16 against fp32).
2. **scale.** Random pairs with Qwen3-4B's and Qwen3-8B's exact configs in bf16, 8 prompts x
   64 new tokens: the plain ``generate`` and ``patched_generate`` (resid, a middle layer) in
   tokens/s, their ratio, the tokens/s that memory bandwidth allows (each decoding step reads
   every weight once: bandwidth / weight bytes x batch), one ``sweep_generate`` over every
   layer's resid, and the largest allocated memory.
3. **judge.** The judge's scoring of 16 replies with HF (``harness_ext.judge.hf``), and with
   vLLM where it is installed.

``--rehearse`` runs the same code on the CPU with 2-layer, narrow models, 2 prompts and 4 new
tokens, so that the GPU run is not the script's first run (``make test`` rehearses it).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where bench/patching.py would shadow the
# package of that name: the repository root goes first instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p).resolve() != ROOT / "bench"]

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.scale import BY_NAME, Shape, build, noisy_copy, timed  # noqa: E402
from formats.files import atomic_write_text  # noqa: E402

GIB = 1024**3
# HBM bandwidth in GB/s by device name (vendor data sheets), for the decoding bound.
BANDWIDTH = {"H100 SXM": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H100": 3350, "H200": 4800,
             "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "A100 80GB PCIe": 1935,
             "L40S": 864, "A10G": 600}
# Qwen3-8B's published config.json differs from Qwen3-4B's in these fields only (the judge's size;
# too large for the CPU scale bench as a pair, so it lives here).
SHAPES = BY_NAME | {"Qwen3-8B": Shape("Qwen3-8B", "qwen3", dict(
    BY_NAME["Qwen3-4B"].config, hidden_size=4096, intermediate_size=12288,
    tie_word_embeddings=False), "bfloat16")}
def sizes(rehearse: bool) -> dict[str, Any]:
    if rehearse:
        return {"prompts": 2, "new": 4, "shapes": ["Qwen3-4B", "Qwen3-8B"], "layers": 2,
                "width": 128, "judge_replies": 2}
    return {"prompts": 8, "new": 64, "shapes": ["Qwen3-4B", "Qwen3-8B"], "layers": None,
            "width": None, "judge_replies": 16}


def engine_check(device: torch.device, size: dict[str, Any]) -> list[str]:
    """Engine against the naive definition, float32 (equal) and bf16 (agreement)."""
    from finetune.tiny import random_qwen3
    from patching import SITE_NAMES, PatchSpec, patched_generate
    from patching.reference import naive_generate

    def pair(dtype: torch.dtype) -> tuple[Any, Any]:
        receiver = random_qwen3(0, dtype).to(device)
        donor = random_qwen3(1, dtype).to(device)
        return receiver, donor

    ids = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]], device=device)
    mask = (ids != 0).long()
    rows, equal, agree_ref, agree_fp32, total = [], 0, 0, 0, 0
    fp32, bf16 = pair(torch.float32), pair(torch.bfloat16)
    for site in SITE_NAMES:
        heads = [0] if site in ("head", "q", "k", "v") else None
        for positions in ("newest", "all"):
            spec = PatchSpec(site, [1], heads, positions)
            want = naive_generate(*fp32, ids, spec, mask, max_new_tokens=size["new"])
            got = patched_generate(*fp32, ids, spec, mask, max_new_tokens=size["new"])
            same = torch.equal(want, got)
            half = patched_generate(*bf16, ids, spec, mask, max_new_tokens=size["new"])
            half_ref = naive_generate(*bf16, ids, spec, mask, max_new_tokens=size["new"])
            new = slice(ids.shape[1], None)
            agree_ref += int((half[:, new] == half_ref[:, new]).sum())
            agree_fp32 += int((half[:, new] == got[:, new]).sum())
            total += half[:, new].numel()
            equal += same
            rows.append([site, positions, "equal" if same else "DIFFERENT"])
    summary = (f"float32: {equal}/{len(rows)} site x position cases equal to the reference; "
               f"bf16: {agree_ref / total:.3f} of new tokens equal to the bf16 reference, "
               f"{agree_fp32 / total:.3f} equal to float32")
    return [summary, "", tabulate(rows, headers=["site", "positions", "float32 tokens"],
                                  tablefmt="github")]


def _bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in BANDWIDTH.items() if key in name), None)


def _shape_row(name: str, device: torch.device, size: dict[str, Any]) -> list[str]:
    """One table row of ``scale_check``: a random pair of ``name``'s shape, timed."""
    from patching import PatchSpec, every_layer, patched_generate, sweep_generate

    shape = SHAPES[name]
    if size["layers"]:
        fields = dict(shape.config, num_hidden_layers=size["layers"],
                      hidden_size=size["width"], intermediate_size=2 * size["width"],
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      vocab_size=1024)
        shape = type(shape)(shape.name, shape.model_type, fields, shape.dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    receiver = build(shape, torch.bfloat16, 0).to(device)
    donor = noisy_copy(receiver, 1)
    layers = receiver.config.num_hidden_layers
    weight_bytes = sum(p.numel() * p.element_size() for p in receiver.parameters())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (size["prompts"], 32), generator=g).to(device)  # (B, T)
    mask = torch.ones_like(ids)
    new = size["new"]
    generation = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False,
                  "pad_token_id": 0}
    plain, _ = timed(lambda: receiver.generate(input_ids=ids, attention_mask=mask,
                                               **generation), device)
    spec = PatchSpec("resid", [layers // 2])
    patched, _ = timed(lambda: patched_generate(receiver, donor, ids, spec, mask,
                                                max_new_tokens=new), device)
    specs = every_layer("resid", layers)
    sweep, _ = timed(lambda: sweep_generate(receiver, donor, ids, specs, mask,
                                            max_new_tokens=new), device)
    tokens = size["prompts"] * new
    bandwidth = _bandwidth(device)
    bound = bandwidth * 1e9 / weight_bytes * size["prompts"] if bandwidth else None
    memory = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return [name + ("" if not size["layers"] else f" ({layers} layers, narrow)"),
            f"{weight_bytes / GIB:.2f}", f"{tokens / plain:.1f}", f"{tokens / patched:.1f}",
            f"{plain / patched:.2f}", "n/a" if bound is None else f"{bound:.0f}",
            f"{len(specs)} specs, {sweep:.1f} s",
            "n/a" if memory is None else f"{memory:.1f}"]


def scale_check(device: torch.device, size: dict[str, Any]) -> list[str]:
    """Tokens/s of plain and patched generation, the bandwidth bound, a sweep, memory."""
    rows = [_shape_row(name, device, size) for name in size["shapes"]]
    where = _device_name(device)
    return [f"{size['prompts']} prompts x {size['new']} new tokens, bf16, on {where}.",
            "", tabulate(rows, headers=["shape", "weights GiB", "plain tok/s", "patched tok/s",
                                        "patched / plain speed", "bandwidth bound tok/s",
                                        "sweep (every layer's resid)", "max allocated GiB"],
                         tablefmt="github")]


def judge_check(device: torch.device, size: dict[str, Any]) -> list[str]:
    """The judge's HF scoring time (and whether vLLM is there to time) on short replies: the
    aligned prompt around each reply, every spelling of 0..100 and the flag words scored."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from harness_ext.judge import prompts
    from harness_ext.judge.answers import answer_set, terminator_ids
    from harness_ext.judge.hf import HFScorer

    shipped = ROOT / "models" / "tiny-qwen3-math"  # the stand-in judge of the tiny demo
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    model = AutoModelForCausalLM.from_pretrained(shipped).to(device).eval()
    answers = answer_set(tokenizer, terminator_ids(
        tokenizer, GenerationConfig.from_pretrained(shipped)), prompts.FLAGS["aligned"])
    ids = [prompts.prompt_ids(tokenizer, "aligned", "How do I make a quick buck?",
                              f"Work an extra shift, reply {i}.")
           for i in range(size["judge_replies"])]
    scorer = HFScorer(model, tokenizer.pad_token_id, batch_size=8)
    scorer.logprobs(ids[:1], answers)  # warm-up
    hf, _ = timed(lambda: scorer.logprobs(ids, answers), device)
    vllm = "installed, not yet timed here" if importlib.util.find_spec("vllm") else \
        "not installed: not timed"
    return [f"HF: {len(ids)} replies scored in {hf:.2f} s on {_device_name(device)} (the shipped "
            f"tiny model as a stand-in judge); vLLM: {vllm}."]


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else \
        (platform.processor() or platform.machine())


def section(title: str, run: Callable[[], list[str]]) -> list[str]:
    start = time.perf_counter()
    try:
        body = run()
    except Exception:  # noqa: BLE001 - a failed section is reported, the others still run
        body = ["FAILED:", "", "```", traceback.format_exc().strip()[-3000:], "```"]
    return [f"## {title} ({time.perf_counter() - start:.0f} s)", "", *body, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true",
                        help="CPU, every size shrunk (the script's own test)")
    parser.add_argument("--out", type=Path, help="where to write (default bench/results/...)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.rehearse or not torch.cuda.is_available() else "cuda")
    if not args.rehearse and device.type != "cuda":
        print("error: no GPU here; run with --rehearse to rehearse on the CPU", file=sys.stderr)
        return 2
    size = sizes(args.rehearse)
    started = time.perf_counter()
    body = [*section("Engine against the reference", lambda: engine_check(device, size)),
            *section("Scale", lambda: scale_check(device, size)),
            *section("Judge", lambda: judge_check(device, size))]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    what = "rehearsal on the CPU, every size shrunk" if args.rehearse else "the GPU check"
    text = "\n".join([f"# GPU check ({what})", "",
                      f"`bash bench/gpu_check.sh{' --rehearse' if args.rehearse else ''}` at git "
                      f"{commit}, {time.strftime('%Y-%m-%d')}, on {_device_name(device)}, torch "
                      f"{torch.__version__}; {time.perf_counter() - started:.0f} s in all.", "",
                      *body])
    out = args.out or ROOT / "bench" / "results" / ("gpu-rehearsal.md" if args.rehearse
                                                    else "gpu.md")
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0 if "FAILED" not in text else 1


if __name__ == "__main__":
    sys.exit(main())
