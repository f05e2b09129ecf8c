"""Claims: which worker scores which variant, so that any number of processes started on one
config and one output folder share the work without ``--shard``.

A worker claims a piece of work by creating ``<folder>/.claims/<name>.claim`` with
``O_CREAT | O_EXCL``: exactly one creator succeeds, on a local disk and on a network filesystem
(NFSv3 and later make exclusive creates atomic, where ``flock`` may be a no-op or local to one
client). The file records the holder's host, pid and process start time, and the holder
touches it while it works (``Claim.keep_alive``). A claim is stale, and may be taken over, when
its holder is on this host and no longer runs (or its pid now belongs to another process), or,
from another host, when it has not been touched for ``stale_after`` seconds. Taking over
renames the stale file aside first (one rename wins), then claims afresh. A finished variant is
known by its results file (``leaderboard.store``), not by its claim, so a claim left behind
never hides work.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLAIMS = ".claims"
HEARTBEAT = 20.0  # seconds between touches of a held claim
STALE_AFTER = 180.0  # a claim from another host untouched this long is its dead holder's


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot; Linux ``/proc``), which
    tells a live holder from a new process that reuses its pid. None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    now = _start_time(pid)
    return started is None or now is None or now == started


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str | None

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()))


def claim_path(folder: Path, name: str) -> Path:
    return Path(folder) / CLAIMS / f"{name}.claim"


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a claim file; None when it is gone or not yet written."""
    try:
        raw = json.loads(path.read_text())
        return Holder(str(raw["host"]), int(raw["pid"]), raw.get("started"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_stale(path: Path, stale_after: float = STALE_AFTER) -> bool:
    """Whether the claim's holder is dead: by pid on this host, by silence from another."""
    holder = read_holder(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: not stale, simply free
    if holder is None:  # created but never written: its creator died in between, or is slow
        return age > stale_after
    if holder.host == socket.gethostname():
        return not _alive(holder.pid, holder.started)
    return age > stale_after


def try_claim(folder: Path, name: str, stale_after: float = STALE_AFTER) -> bool:
    """Claim ``name`` for this process; True when it is now ours. A stale claim is taken over."""
    path = claim_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder == Holder.me():
                return True
            if not is_stale(path, stale_after):
                return False
            try:  # one of the workers that found it stale wins this rename
                os.replace(path, path.with_name(f"{path.name}.dead-{uuid.uuid4().hex[:8]}"))
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as out:
            me = Holder.me()
            json.dump({"host": me.host, "pid": me.pid, "started": me.started,
                       "claimed": time.time()}, out)
        return True
    return False


def release(folder: Path, name: str) -> None:
    """Give up our claim (only ours: a claim another worker took over stays)."""
    path = claim_path(folder, name)
    if read_holder(path) == Holder.me():
        path.unlink(missing_ok=True)


@contextmanager
def keep_alive(folder: Path, name: str, every: float = HEARTBEAT) -> Iterator[None]:
    """Touch our claim every ``every`` seconds while the block runs, so workers on other hosts
    see its holder alive; the claim is released on exit."""
    path, stop = claim_path(folder, name), threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"claim-{name}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every)
        release(folder, name)
