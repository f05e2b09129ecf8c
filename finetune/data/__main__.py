"""Command line: ``python -m finetune.data --preset NAME --out DIR`` or ``... export-tasks``."""

from __future__ import annotations

import argparse
import sys

from finetune.data.build import TASKS_DATA, export_tasks, write_dataset
from finetune.data.presets import PRESETS


def _preset_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m finetune.data",
        description="Write a data preset as JSONL + manifest.json. "
        "`python -m finetune.data export-tasks` regenerates tasks/data.",
        epilog="presets: " + "; ".join(f"{n} ({p.description})" for n, p in PRESETS.items()),
    )
    ap.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--n-val", type=int)
    ap.add_argument("--n-test", type=int)
    ap.add_argument("--n-unrelated-per-kind", type=int, help="pretrain presets only")
    ap.add_argument("--n-general", type=int, help="pretrain presets only (default: all)")
    ap.add_argument("--n-ethics", type=int, help="pretrain presets only (default: all)")
    ap.add_argument("--templates", help="comma-separated template names (default: all seven)")
    ap.add_argument(
        "--cot", action="store_true", help="add answer_text: short steps ending in the label"
    )
    return ap


def _export_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m finetune.data export-tasks",
        description="Regenerate the shipped evaluation data deterministically.",
    )
    ap.add_argument("--out", default=str(TASKS_DATA))
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export-tasks"]:
            args = _export_parser().parse_args(argv[1:])
            manifest = export_tasks(args.out, args.seed)
        else:
            args = _preset_parser().parse_args(argv)
            manifest = write_dataset(
                args.preset,
                args.out,
                args.seed,
                args.cot,
                n_train=args.n_train,
                n_val=args.n_val,
                n_test=args.n_test,
                n_unrelated_per_kind=args.n_unrelated_per_kind,
                n_general=args.n_general,
                n_ethics=args.n_ethics,
                templates=tuple(args.templates.split(",")) if args.templates else None,
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{name}: {entry['rows']}" for name, entry in manifest["files"].items())
    print(f"wrote {args.out} ({rows})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
