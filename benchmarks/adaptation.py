"""On-device adaptation on real repositories that are not in the training corpus: held-out single-line
exact match and edit similarity before and after `python -m lsp_server.adapt`, per repository, with
the time each step took.

    .venv/bin/python benchmarks/adaptation.py --eval-cases 400            # the default recipe
    .venv/bin/python benchmarks/adaptation.py --eval-cases 400 -- --passes 4 --lr 5e-4   # another one

The packages are the cross-file benchmark's (engine/evaluate/crossfile_cases.py: excluded from every
training run of the default model), fetched once into .cache/crossfile/; two more, never used to choose
the recipe, on request:

    .venv/bin/python benchmarks/adaptation.py --eval-cases 400 --packages flask,toolz

Arguments after `--` go to `lsp_server.adapt` unchanged. Each run writes its adapter and report under
--out/<package>/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossfile import workspace  # noqa: E402

from engine.evaluate.crossfile_cases import ALL_PACKAGES, PACKAGES  # noqa: E402  (crossfile put the repository on the path)

REPO = Path(__file__).resolve().parents[1]
KINDS = ("line", "punct", "ident", "cross")


def adapt(package_dir: Path, out: Path, eval_cases: int, threads: int, extra: list[str]) -> tuple[dict, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lsp_server.adapt", "--workspace", str(package_dir), "--out", str(out),
                           "--eval-cases", str(eval_cases), "--threads", str(threads), *extra],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{package_dir.name}: exit {done.returncode}\n{done.stdout[-2000:]}")
    return json.loads((out / "report.json").read_text()), time.monotonic() - started


def row(name: str, report: dict, wall_s: float) -> str:
    b, a = report["before"], report["after"]
    kinds = " / ".join(f"{b['by_kind'][k]['exact_match']:.0f}->{a['by_kind'][k]['exact_match']:.0f}" for k in KINDS)
    return (f"| {name} | {len(report['heldout_files'])} | {b['cases']} | {b['exact_match']:.1f} | {a['exact_match']:.1f} | "
            f"{a['exact_match'] - b['exact_match']:+.1f} | {b['edit_similarity']:.1f} | {a['edit_similarity']:.1f} | {kinds} | "
            f"{report['steps']} | {report['train_seconds'] / 60:.1f} | {wall_s / 60:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / ".cache" / "adaptation"))
    p.add_argument("--eval-cases", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--packages", default=",".join(pkg.name for pkg in PACKAGES),
                   help="comma-separated, of: " + ", ".join(pkg.name for pkg in ALL_PACKAGES)
                   + " (the last two are not in the default: the recipe was chosen without them)")
    p.add_argument("extra", nargs="*", help="after --: arguments for lsp_server.adapt")
    args = p.parse_args()
    wanted = args.packages.split(",")
    print("| repository | held-out files | cases | exact before | exact after | gain (points) | edit sim. before | "
          "after | exact by kind (line / punct / ident / cross) | steps | train min | whole run min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    gains = []
    for pkg in (pkg for pkg in ALL_PACKAGES if pkg.name in wanted):
        report, wall = adapt(workspace(pkg), Path(args.out) / pkg.name, args.eval_cases, args.threads, args.extra)
        gains.append(report["after"]["exact_match"] - report["before"]["exact_match"])
        print(row(f"{pkg.name} {pkg.version}", report, wall), flush=True)
    if gains:
        print(f"\nmean gain {sum(gains) / len(gains):+.2f} points, smallest {min(gains):+.1f}")


if __name__ == "__main__":
    main()
