"""``python -m study --config FILE [--dry-run] [--retrain] [--from STAGE] [--until STAGE]
[--shard i/n|auto] [--publish]``: run the study's stages in order, each skipped when its inputs
are unchanged, and write the report in the work dir (``--publish`` copies it out as well).

Bad settings end as one ``error: ...`` line (exit 2); a failed stage as one line (exit 1);
an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from formats.errors import InputError

from .config import StudyConfig, StudyConfigError
from .stage_list import stage_list
from .stages import StageError, Study


def _log_lines() -> None:
    """Library INFO lines with a time stamp: they go to each stage's ``stage.log`` (or to the
    terminal with ``--verbose``), where a slow stage can be read back."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    parser.add_argument("--verbose", action="store_true",
                        help="show lm-eval's and the Trainer's output here, not in each "
                             "stage's stage.log")
    parser.add_argument("--publish", action="store_true",
                        help="then copy the report to report.publish_dir and the README block "
                             "into report.readme (tracked files: make publish)")
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
        spec = study.config.report
        if args.publish and not (spec.publish_dir or spec.readme):
            raise StudyConfigError("--publish: the config's report: block names no publish_dir "
                                   "or readme to publish to")
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
    _log_lines()
    from .pipeline import run_stages

    began = time.time()
    stages = stage_list(study.config)
    try:
        results = run_stages(study, stages, args.start, args.until, logs=not args.verbose)
        if len(results) < len(stages):
            print(f"[study] stopped after {results[-1].name} in {time.time() - began:.0f} s")
            return 0
        from leaderboard.claims import keep_alive, try_claim

        from .publish import mark_report, publish_report, report_hashes, write_report

        hashes = {r.name: r.hash for r in results}
        report = study.work / "report" / "REPORT.md"
        if report_hashes(study) != hashes or args.publish:
            if not try_claim(study.work, "publish"):
                print(f"[study] done in {time.time() - began:.0f} s; another worker writes the "
                      "report")
                return 0
            with keep_alive(study.work, "publish"):
                if report_hashes(study) != hashes:  # not written meanwhile by another worker
                    write_report(study, results, args.config, args.started_at)
                    mark_report(study, hashes)
                    print(f"[study] report written: {report}")
                if args.publish:
                    changed = publish_report(study, args.config)
                    print(f"[study] published: {', '.join(changed) or 'nothing changed'}")
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
