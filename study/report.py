"""Wall time and peak memory per stage, and progress lines with an ETA.

Peak memory is the largest resident set seen while the stage ran, this process plus its
children (a pretraining subprocess), sampled every 0.2 s with psutil when it is installed;
without psutil it falls back to ``getrusage``'s process-lifetime maximum, which can only grow,
and says so. The ETA sums the remaining stages' last measured times (this work dir's earlier
runs, else the published demo's), so a first run from a fresh clone still shows one.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from formats.console import console
from formats.files import atomic_write_text

try:
    import psutil
except ImportError:  # psutil comes with accelerate; the fallback keeps the study running
    psutil = None

TIMINGS = "timings.json"


def _rss_now() -> int:
    """Resident bytes of this process and its live children."""
    proc = psutil.Process()
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def _rusage_peak() -> int:
    """Lifetime peak resident bytes of this process and of its finished children (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024


@dataclass
class Meter:
    """Measures one stage: ``with Meter() as m: ...``; then ``m.seconds`` and ``m.peak_bytes``.

    ``ledger``: a file in the stage's folder where the time spent so far is saved every
    ``save_every`` seconds, so that a stage killed and resumed reports the time of all its
    runs (``segments`` of them), not only the last one's; it is removed when the stage ends."""

    interval: float = 0.2
    ledger: Path | None = None
    save_every: float = 5.0
    seconds: float = 0.0
    segments: int = 1
    peak_bytes: int = 0
    method: str = "psutil RSS sampled every 0.2 s (process + children)"
    _earlier: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _elapsed(self) -> float:
        return self._earlier + time.perf_counter() - self._start

    def _save(self) -> None:
        atomic_write_text(self.ledger, json.dumps({"seconds": round(self._elapsed(), 2),
                                                   "segments": self.segments}) + "\n")

    def _sample(self) -> None:
        saved = time.perf_counter()
        while not self._stop.wait(self.interval):
            if psutil is not None:
                self.peak_bytes = max(self.peak_bytes, _rss_now())
            if self.ledger is not None and time.perf_counter() - saved >= self.save_every:
                self._save()
                saved = time.perf_counter()

    def __enter__(self) -> Meter:
        self._start = time.perf_counter()
        if self.ledger is not None:
            try:
                earlier = json.loads(self.ledger.read_text())
                self._earlier, self.segments = float(earlier["seconds"]), earlier["segments"] + 1
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no earlier run (or a torn file): this run's time alone
        if psutil is not None:
            self.peak_bytes = _rss_now()
        else:
            self.method = "getrusage ru_maxrss (process lifetime peak, not per stage)"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.seconds = self._elapsed()
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_now()) if psutil is not None \
            else _rusage_peak()
        if self.ledger is not None:
            if exc_type is None:
                self.ledger.unlink(missing_ok=True)
            else:
                self._save()


def load_timings(*paths: Path) -> dict[str, float]:
    """Stage seconds from the readable timings files among ``paths``; earlier files win."""
    out: dict[str, float] = {}
    for path in reversed(paths):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out |= {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
    return out


def fmt_seconds(seconds: float) -> str:
    """``75`` -> ``1m15s``."""
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def header(index: int, total: int, name: str, note: str, elapsed: float,
           remaining: list[float | None]) -> str:
    """The banner printed before a stage: position, what it does, elapsed time and ETA."""
    known = [s for s in remaining if s is not None]
    eta = f"ETA {fmt_seconds(sum(known))}" if known else "ETA unknown (no earlier timing)"
    if known and len(known) < len(remaining):
        eta += " + stages never timed"
    return (f"\n=== [{index}/{total}] {name}: {note} | elapsed {fmt_seconds(elapsed)}, {eta} ===")


def say(line: str) -> None:
    """Progress goes to the terminal with our bars, unbuffered, so it interleaves in order (a
    stage's library output goes to its log: ``formats.console``)."""
    print(line, file=console(), flush=True)

