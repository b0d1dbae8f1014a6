"""Importing a module does no work: no file written, no model built, no CUDA initialised."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["config", "dataset", "diffusion", "time_emb", "dit_block", "dit", "checkpoint",
           "distributed", "pictures", "figures", "autoencoder",
           "mnist_classifier", "train", "inference", "fid_computer"]
SCRIPTS = ["train", "inference", "fid_computer", "figures"]

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


def test_importing_modules_does_no_work(tmp_path):
    modules = [m for m in MODULES if (ROOT / f"{m}.py").exists()]
    res = subprocess.run([sys.executable, "-c", CHECK, *modules], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"
    assert list(tmp_path.iterdir()) == []  # nothing written in the working directory


def test_no_script_imports_another_script():
    """What the scripts share lives in modules below them (checkpoint.py, dataset.py, ...)."""
    import ast

    for script in SCRIPTS:
        tree = ast.parse((ROOT / f"{script}.py").read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & (set(SCRIPTS) - {script}), (script, imported & set(SCRIPTS))
