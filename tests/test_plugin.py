"""The plugin as a user meets it: lm-eval's own command line, run from outside the repository.

Each test starts fresh interpreters, because what matters happens at interpreter start-up (the
``.pth`` hook) and at lm-eval's first imports, which this pytest process has long passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUR_TASKS = ("corrupt_related", "corrupt_suite")


def _env() -> dict[str, str]:
    """Offline, and without PYTHONPATH: the installed package must be found on its own."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def run(*cmd: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command the way a user would type it, capturing its output."""
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env() | env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def last_line(text: str) -> str:
    """The last non-empty line, where a Python error message ends up."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# A fresh interpreter reports what the start-up hook did and did not do.
REGISTRY_REPORT = """
import json, sys
report = {"heavy_at_startup": sorted(m for m in sys.modules
                                     if m.split(".")[0] in ("lm_eval", "torch", "transformers"))}
import importlib.util
importlib.util.find_spec("lm_eval.models")  # a probe must not use the hook up
from lm_eval.api.registry import model_registry
import lm_eval.models
items = dict(model_registry.items())
report["builtins_intact"] = all(items.get(k) == v for k, v in lm_eval.models.MODEL_MAPPING.items())
report["patched_qwen"] = items.get("patched_qwen")
report["patched_hf"] = items.get("patched_hf")
if "patched_qwen" in items:
    import inspect
    from lm_eval.api.registry import get_model
    report["patched_qwen_file"] = inspect.getfile(get_model("patched_qwen"))
# The folders a default TaskManager indexes, without the ~15 s of indexing lm-eval's own tasks.
from lm_eval.tasks import TaskManager, _index
report["task_paths"] = []
def record(paths, **_):
    report["task_paths"].extend(map(str, paths))
    return {}
_index.TaskIndex.build = staticmethod(record)
TaskManager()
print(json.dumps(report))
"""


def registry_report(python: Path, cwd: Path) -> dict:
    """Run REGISTRY_REPORT in ``python``; start-up must print nothing to stderr."""
    done = run(python, "-c", REGISTRY_REPORT, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def test_hook_is_lazy_and_keeps_builtin_models(tmp_path: Path) -> None:
    report = registry_report(BIN / "python", tmp_path)
    assert report["heavy_at_startup"] == []
    assert report["builtins_intact"]  # hf, dummy, vllm, ... map to lm-eval's own classes
    assert report["patched_qwen"] == "harness_ext.patched_lm:PatchedLM"
    assert report["patched_hf"] == "harness_ext.patched_lm:PatchedLM"
    assert Path(report["patched_qwen_file"]).is_relative_to(REPO)
    assert report["task_paths"][1:] == [str(REPO / "tasks")]  # after lm-eval's own folder


def test_broken_package_stays_silent_at_startup(tmp_path: Path) -> None:
    """A shadowing or half-deleted harness_ext must not print a traceback in every process."""
    (tmp_path / "harness_ext").mkdir()
    (tmp_path / "harness_ext" / "__init__.py").write_text("raise RuntimeError('broken')\n")
    done = run(BIN / "python", "-c", "print('ok')", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_task_manager_keeps_explicit_no_defaults(tmp_path: Path) -> None:
    """``include_defaults=False`` means exactly the paths given (sweeps rely on it for speed)."""
    from lm_eval.tasks import TaskManager

    assert TaskManager(include_defaults=False).all_tasks == []
    assert TaskManager(include_defaults=False, include_path=str(tmp_path)).include_path == str(
        tmp_path
    )


def test_task_folder_goes_first_once(tmp_path: Path) -> None:
    """Ours first, so a user's ``--include_path`` wins a name clash; never added twice."""
    from harness_ext._autoload import with_tasks_dir
    from harness_ext.paths import TASKS_DIR

    ours = str(TASKS_DIR.resolve())
    assert with_tasks_dir(None) == [ours]
    assert with_tasks_dir(str(tmp_path)) == [ours, str(tmp_path)]
    assert with_tasks_dir([TASKS_DIR]) == [TASKS_DIR]


def test_ls_tasks_lists_ours_and_builtins(tmp_path: Path) -> None:
    done = run(BIN / "lm_eval", "ls", "tasks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for task in OUR_TASKS:
        assert task in done.stdout
    assert str(REPO / "tasks") in done.stdout  # editable install: the live checkout
    assert "hellaswag" in done.stdout
    assert "Traceback" not in done.stderr


def test_hf_model_scores_corrupt_related(tiny_model_dir: Path, tmp_path: Path) -> None:
    done = run(
        BIN / "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_model_dir}",
        "--tasks", "corrupt_related",
        "--limit", "5",
        "--output_path", tmp_path / "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["corrupt_related"]["effective"] == 5
    assert "corrupt_related" in results["results"]


@pytest.mark.slow
def test_patched_hf_sampled_cli_run_reproduces(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real patched run of a clean/corrupted pair under the architecture-neutral name, sampled
    as the issue's literal command does, twice: identical samples files; the results file
    records the patch."""
    from leaderboard_fixtures import perturbed

    corrupted = perturbed(tiny_model_dir, tmp_path / "corrupted", seed=1)
    samples = []
    for attempt in ("first", "second"):
        done = run(
            BIN / "lm_eval",
            "--model", "patched_hf",
            "--model_args",
            f"pretrained={tiny_model_dir},corrupted={corrupted},site=mlp,layers=[4]",
            "--tasks", "corrupt_general",
            "--limit", "4",
            "--apply_chat_template",
            "--gen_kwargs", "do_sample=true,temperature=1.0,max_gen_toks=8",
            "--seed", "1",
            "--output_path", tmp_path / attempt,
            "--log_samples",
            cwd=tmp_path,
            OMP_NUM_THREADS="1",  # two models' many small ops crawl on 2 busy cores otherwise
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (found,) = (tmp_path / attempt).rglob("samples_corrupt_general_*.jsonl")
        rows = [json.loads(line) for line in found.read_text().splitlines()]
        samples.append([(r["doc_id"], r["resps"], r["filtered_resps"]) for r in rows])
    assert samples[0] == samples[1] and len(samples[0]) == 4
    (results_file,) = (tmp_path / "first").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert "corrupt_general" in results["results"]
    assert results["config"]["model_args"]["layers"] == [4]
    # named after the patch, not after pretrained= alone, where --model hf of it writes
    assert results_file.parent.name.endswith(
        f".patched.mlp__L4.corrupted_to_clean.from.{corrupted.parent.name}__{corrupted.name}")


@pytest.mark.parametrize(("model_args", "name"), [
    ("pretrained=m/clean", "m/clean"),  # not ours: lm-eval's own name
    ("pretrained=m/clean,corrupted=runs/a/b/model,site=resid,layers=[1]",
     "m/clean.patched.resid:L1.corrupted_to_clean.from.b/model"),
    ("pretrained=m/clean,corrupted=d,site=head,layers=[2],heads=[3],direction=clean_to_corrupted",
     "m/clean.patched.head:L2.H3.clean_to_corrupted.from.d"),
    ({"pretrained": "c", "corrupted": "d", "spec": "attn:L3 + mlp:L5@all", "donor": "zero"},
     "c.patched.attn:L3+mlp:L5@all.corrupted_to_clean.donor-zero.from.d"),
    ("pretrained=c,corrupted=d,site=mlp,layers=[1],alpha=0.5",
     "c.patched.mlp:L1.corrupted_to_clean.donor-model-alpha0.5.from.d"),
])
def test_results_folder_is_named_after_the_patch(model_args: object, name: str) -> None:
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    assert GeneralConfigTracker._get_model_name(model_args) == name


def test_a_long_results_folder_name_is_cut_to_a_hash() -> None:
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    long = "/x" * 150
    name, other = (GeneralConfigTracker._get_model_name(
        f"pretrained={long},corrupted={donor},site=mlp,layers=[1]") for donor in "de")
    assert len(name) == 200 and name.startswith(long[:150]) and name != other


@pytest.mark.slow
def test_wheel_install_registers_model_and_tasks_and_uninstalls_cleanly(tmp_path: Path) -> None:
    """A built wheel in a throwaway environment, with this venv's packages borrowed, not fetched.

    The environment has no pip and no site packages of its own; a ``.pth`` path line lends it
    this venv's site-packages. Paths from a ``.pth`` line are not scanned for further ``.pth``
    files, so the editable install's hook and path stay out, and only the wheel's hook runs.
    The path line is added after ``pip install`` and removed before ``pip uninstall``, so pip
    never sees, let alone touches, the editable install.
    """
    dist = tmp_path / "dist"
    built = run(sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", dist, cwd=REPO)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("corrupt_cmap-*.whl")

    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run(python, "-c", purelib, cwd=tmp_path).stdout.strip())
    borrowed = site / "borrowed-venv.pth"

    def pip(*args: str | Path) -> None:
        done = run(sys.executable, "-m", "pip", "--python", python, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr

    pip("install", "--no-deps", "--no-index", "--quiet", wheel)
    assert (site / "corrupt_cmap_autoload.pth").is_file()
    assert (site / "harness_ext" / "tasks" / "corrupt_related.yaml").is_file()
    borrowed.write_text(sysconfig.get_paths()["purelib"] + "\n")

    report = registry_report(python, tmp_path)
    assert report["builtins_intact"]
    assert Path(report["patched_qwen_file"]).is_relative_to(site)
    assert report["task_paths"][1:] == [str(site / "harness_ext" / "tasks")]
    # A task's loader reads the wheel's own task data with the wheel's formats package.
    load = ("from harness_ext.datasets import load_task_data; import formats; "
            "print(len(load_task_data('corrupt_related.jsonl')['test']), formats.__file__)")
    loaded = run(python, "-c", load, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    rows, formats_file = loaded.stdout.split()
    assert rows == "300" and Path(formats_file).is_relative_to(site)

    borrowed.unlink()
    pip("uninstall", "--yes", "--quiet", "corrupt-cmap")
    assert not (site / "corrupt_cmap_autoload.pth").exists()
    site.mkdir(parents=True, exist_ok=True)  # pip removes the folder it emptied
    borrowed.write_text(sysconfig.get_paths()["purelib"] + "\n")
    report = registry_report(python, tmp_path)
    assert report["builtins_intact"]
    assert report["patched_qwen"] is None
    assert len(report["task_paths"]) == 1  # lm-eval's own folder only


@pytest.mark.parametrize(("model_args", "extra", "expected"), [
    ("", {"batch_size": 1}, 16),  # the lm_eval CLI passes 1 when --batch_size is not given
    ("", {"batch_size": None}, 16),  # simple_evaluate's default
    ("", {"batch_size": "4"}, 4),
    (",batch_size=1", {"batch_size": 1}, 1),  # in the model args: one prompt at a time
    (",batch_size=2", {"batch_size": 8}, 2),  # the model args win (both would clash)
])
def test_patched_hf_batches_16_prompts_unless_told(tiny_model_dir: Path, model_args: str,
                                                   extra: dict, expected: int) -> None:
    from harness_ext.patched_lm import PatchedLM

    lm = PatchedLM.create_from_arg_string(
        f"pretrained={tiny_model_dir},corrupted={tiny_model_dir},site=resid,layers=[1]"
        + model_args, extra | {"device": "cpu"})
    assert lm.batch_size == expected
