"""Writing a file so that no reader, and no resumed run, ever sees half of it: a temporary
file beside the target, renamed over it (``os.replace`` is atomic on one file system)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from formats.errors import InputError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide published files from other users
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(folder: Path, purpose: str) -> None:
    """One line (InputError) unless a file can be made in ``folder``, or in the nearest existing
    folder above it when it is still to be made. It creates and removes a probe file: the only
    test that also holds for root, read-only mounts and ACLs, which permission bits miss."""
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{folder}: {probe} is a file, not a folder; {purpose}")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-probe.")
    except OSError as err:
        raise InputError(f"{folder}: not writable ({err.strerror}); {purpose}") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_figure(fig: object, path: Path, **savefig_kwargs: object) -> Path:
    """Save a matplotlib figure to ``path`` atomically (PNG); returns ``path``."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **savefig_kwargs))
    return path


def shown_path(path: Path) -> str:
    """A path relative to the current directory when it is inside it: published files then
    name it the same way on every machine, not the machine's checkout."""
    rel = os.path.relpath(path)
    return Path(path).as_posix() if rel.startswith("..") else rel
