"""Make the shipped weights: a finished run's EMA weights in half precision, with its log.

    python benchmarks/ship_weights.py                    # runs/default -> pretrained/

Writes pretrained/model.pth (checkpoint.ship_weights: EMA weights in float16, the weak model that
autoguidance guides away from in float16 too, the config, the step and where they came from: the
commit and the command) and copies the run's log.csv beside
it, so that `python inference.py --checkpoint pretrained/model.pth` samples and `python
figures.py` redraws every picture of the README without training first.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from common import ROOT  # beside this file in benchmarks/; puts the project on the path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/default", help="the finished run's folder")
    p.add_argument("--out-dir", default="pretrained")
    p.add_argument("--command", default="python train.py", help="the command that trained it")
    args = p.parse_args()

    from support.checkpoint import ship_weights

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip() or "unknown"
    out = Path(args.out_dir)
    shipped = ship_weights(Path(args.run) / "model.pth", out / "model.pth",
                           source=f"commit {commit}: {args.command}")
    shutil.copyfile(Path(args.run) / "log.csv", out / "log.csv")
    size = (out / "model.pth").stat().st_size
    print(f"{out / 'model.pth'}: step {shipped['step']}, {size / 1e6:.2f} MB; "
          f"{out / 'log.csv'}; source: {shipped['source']}")


if __name__ == "__main__":
    main()
