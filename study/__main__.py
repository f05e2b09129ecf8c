"""``python -m study --config FILE [--dry-run] [--retrain] [--from STAGE] [--until STAGE]
[--shard i/n|auto]``: run the study's stages in order, each skipped when its inputs are unchanged.

Bad settings end as one ``error: ...`` line (exit 2); a failed stage as one line (exit 1);
an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

from formats.errors import InputError

from .config import StudyConfig, StudyConfigError
from .stage_list import stage_list
from .stages import StageError, Study


def _quiet() -> None:
    """Stage lines and the stages' own bars: lm-eval and transformers log several warnings and
    bars per evaluated variant (hundreds per sweep), which would bury the progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars (the Trainer's bar stays)
    for name in ("lm_eval", "transformers", "accelerate", "datasets", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="study YAML (configs/study/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the whole plan offline and run nothing")
    parser.add_argument("--retrain", action="store_true",
                        help="rebuild the base model with its pretraining recipe")
    parser.add_argument("--from", dest="start", metavar="STAGE",
                        help="redo this stage and every later one, cached or not")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--shard", default="0/1",
                        help="i/n or auto: run only this share of the sweep variants, then stop")
    parser.add_argument("--device", help="override the evaluation device (cpu, cuda:1, ...)")
    parser.add_argument("--started-at", type=float,
                        help="epoch seconds the caller started (make demo: set-up included)")
    parser.add_argument("--verbose", action="store_true", help="keep lm-eval's log lines")
    args = parser.parse_args(argv)
    from leaderboard.sweep import launcher_device, parse_shard

    try:
        shard = parse_shard(args.shard)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if shard[1] > 1 and args.start:
        parser.error("--from with --shard: every shard would redo the stage; run --from alone")
    device = args.device or (launcher_device() if args.shard == "auto" else None)
    try:
        study = Study(StudyConfig.from_yaml(args.config), args.retrain, shard, device)
        study.check_inputs()
        if args.dry_run:
            from .dryrun import PlanError, dry_run

            try:
                lines = dry_run(study)
            except PlanError as err:
                raise StudyConfigError(str(err)) from None
            print(f"[dry-run] {args.config}: nothing is run")
            print("\n".join(f"  {line}" for line in lines))
            return 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.verbose:
        _quiet()
    from .pipeline import run_stages

    began = time.time()
    stages = stage_list(study.config)
    try:
        results = run_stages(study, stages, args.start, args.until)
        if len(results) < len(stages):
            print(f"[study] stopped after {results[-1].name} in {time.time() - began:.0f} s")
            return 0
        from leaderboard.claims import keep_alive, release, try_claim

        from .publish import mark_published, publish, published_for

        hashes = {r.name: r.hash for r in results}
        if not try_claim(study.work, "publish"):
            print(f"[study] done in {time.time() - began:.0f} s; another worker publishes the "
                  "report")
            return 0
        if published_for(study) == hashes:  # another worker published these results
            release(study.work, "publish")
            print(f"[study] done in {time.time() - began:.0f} s; report: "
                  f"{study.work / 'report' / 'REPORT.md'} (published already)")
            return 0
        with keep_alive(study.work, "publish"):
            report = publish(study, results, args.config, args.started_at)
            mark_published(study, hashes)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[study] interrupted: run the same command again to resume from the cached "
              "stages", file=sys.stderr)
        return 130
    print(f"[study] done in {time.time() - began:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
