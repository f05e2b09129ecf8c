"""The page's "attribution patching vs exact CMAP" section, when a check report exists.

    python -m patching.attribution_check --clean C --corrupted X --out RESULTS_DIR/attribution

writes ``attribution.json`` there; ``leaderboard.build`` then adds this section, with the same
tables as the check's own attribution.md, so a head-level sweep prefiltered by attribution
(``prefilter: attribution``) is shown next to the evidence for how far the ranking is trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from patching.attribution_report import agreement_table, timing_table

from .results import LeaderboardError

REPORT_DIR = "attribution"


def section(results_dir: Path, page: Path) -> list[str]:
    """Markdown lines of the section; none when the results folder has no check report."""
    path = Path(results_dir) / REPORT_DIR / "attribution.json"
    if not path.is_file():
        return []
    try:
        report = json.loads(path.read_text())
        cfg = report["config"]
        tables = [*agreement_table(report), "", *timing_table(report)]
    except (ValueError, KeyError, TypeError) as err:
        raise LeaderboardError(f"{path}: not an attribution check report ({err!r})") from None
    lines = [
        "## Attribution patching vs exact CMAP", "",
        f"Clean `{cfg['clean']}`, corrupted `{cfg['corrupted']}`, `{cfg['direction']}`: "
        "attribution scores of every component against the exact teacher-forced patching "
        f"effect (positions={cfg['positions']}); method and caveats in "
        f"`{path.parent / 'attribution.md'}`.", "",
        *tables, "",
    ]
    plot = path.parent / "attribution.png"
    if plot.is_file():
        rel = Path(os.path.relpath(plot, page.parent)).as_posix()
        lines += [f"![attribution vs exact effect]({rel})", ""]
    return lines
