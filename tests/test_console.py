"""``formats.console.to_log``: inside the block every write to stdout or stderr, ours, a
library's or a subprocess's, lands in the log; ``console()`` still reaches the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import subprocess, sys
from pathlib import Path
from formats.console import console, logging_to_file, to_log
print("before", file=sys.stderr)
with to_log(Path(sys.argv[1])):
    print(logging_to_file(), file=console())
    print("to stdout")
    print("to stderr", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "import sys; print('child', file=sys.stderr)"])
    print("our progress", file=console(), flush=True)
print("after", file=sys.stderr)
print(console() is sys.stderr, logging_to_file())
"""


def test_library_output_goes_to_the_log_and_progress_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert done.stderr.split() == ["before", "True", "our", "progress", "after"]
    assert done.stdout.split() == ["True", "False"]  # console() is stderr again after it
    assert sorted(log.read_text().split()) == ["child", "stderr", "stdout", "to", "to"]
