"""``python -m finetune --config FILE.yaml [--dry-run]``: the corrupting fine-tune's command line.

Bad settings and inputs end as one ``error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from finetune.sft_config import SFTConfig
from formats.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file of SFTConfig fields")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and report steps, warm-up and batch; load no weights")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ns = parser.parse_args(argv)
    try:
        cfg = SFTConfig.from_yaml(ns.config)
        # Imported only now, so that --help and config errors do not pay for torch/transformers.
        from finetune.sft import run_sft
        from finetune.sft_plan import dry_run

        if ns.resume:
            cfg.resume = True
        if ns.dry_run:
            _, lines = dry_run(cfg)
            print(f"[dry-run] {ns.config}")
            print("\n".join(f"  {line}" for line in lines))
            return 0
        run_sft(cfg)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
