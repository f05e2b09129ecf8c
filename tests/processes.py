"""Run several worker processes at once and collect what they printed.

Each child writes to its own files, never to a pipe: a pipe that the parent reads one child at
a time fills (64 KiB) while the parent waits on another child, and the blocked child then
holds its claims for ever, so the other worker waits for it too. That deadlock timed out the
two-worker study test in CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    returncode: int
    out: str
    err: str


def run_together(commands: list[list[str]], folder: Path, cwd: Path, env: dict[str, str],
                 timeout: float) -> list[Finished]:
    """Start every command, wait for all of them (killing all once ``timeout`` passes, then
    failing with each one's last output), and return each one's exit code and output."""
    folder.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    for i, command in enumerate(commands):
        out, err = folder / f"worker{i}.out", folder / f"worker{i}.err"
        with open(out, "w") as out_file, open(err, "w") as err_file:
            procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out_file,
                                          stderr=err_file, text=True, start_new_session=True))
        logs.append((out, err))
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        tails = [f"worker{i} stderr:\n{err.read_text()[-3000:]}"
                 for i, (_, err) in enumerate(logs)]
        raise AssertionError(f"workers still running after {timeout:.0f} s\n"
                             + "\n".join(tails)) from None
    return [Finished(proc.returncode, out.read_text(), err.read_text())
            for proc, (out, err) in zip(procs, logs, strict=True)]
