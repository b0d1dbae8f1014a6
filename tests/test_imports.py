"""The layout: importing a module does no work, the top level holds the lesson's files only, and
imports go one way (scripts -> the lesson's modules -> support/, never back up)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"train", "inference", "fid_computer", "figures"}
LESSON = {"config", "dataset", "diffusion", "time_emb", "dit_block", "dit", "autoencoder"} | SCRIPTS
SUPPORT = sorted(p.stem for p in (ROOT / "support").glob("*.py") if p.stem != "__init__")

CHECK = """
import sys, torch
import torch.nn as nn
built = []
original_init = nn.Module.__init__
def spy(self, *a, **k):
    built.append(type(self).__name__)
    original_init(self, *a, **k)
nn.Module.__init__ = spy
for name in sys.argv[1:]:
    __import__(name)
assert not built, f"modules built at import: {built}"
assert not torch.cuda.is_initialized()
print("ok")
"""


def imported_names(path: Path) -> set[str]:
    """The top-level names of every module a file imports (`from support.cli import x` gives
    `support`, `import support.cli` too, and `from support import cli` gives `support`)."""
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}


def test_importing_modules_does_no_work(tmp_path):
    modules = sorted(LESSON) + [f"support.{m}" for m in SUPPORT]
    res = subprocess.run([sys.executable, "-c", CHECK, *modules], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []  # nothing written in the working directory


def test_the_top_level_holds_the_lesson_only():
    """`ls` reads as the lesson's table of contents: its modules and scripts, nothing else."""
    assert {p.stem for p in ROOT.glob("*.py")} == LESSON


def test_no_script_imports_another_script():
    """What the scripts share lives in modules below them (support/, dataset.py, ...)."""
    for script in SCRIPTS:
        found = imported_names(ROOT / f"{script}.py") & (SCRIPTS - {script})
        assert not found, (script, found)


def test_support_imports_nothing_from_the_top_level():
    """support/ is one floor down: it imports other support modules and libraries, never a module
    of the lesson (the caller passes the model, the diffusion or the config in)."""
    for name in SUPPORT:
        found = imported_names(ROOT / "support" / f"{name}.py") & LESSON
        assert not found, (f"support/{name}.py", found)


def test_no_benchmark_imports_a_script():
    """A benchmark runs a script by its command line (benchmarks/common.run_script) or imports
    the library modules the scripts use, never the scripts themselves."""
    for path in (ROOT / "benchmarks").glob("*.py"):
        found = imported_names(path) & SCRIPTS
        assert not found, (path.name, found)
