"""A stand-in for `python -m lsp_server.adapt` in the job manager's unit tests: the same command line
and the same stdout lines (ADAPT_CONTRACT), a checkpoint after every step, SIGTERM handling and
--resume, but no model (the real run is tested end to end in tests/lsp/test_e2e_adapt.py).

Its environment picks the outcome: STANDIN_GAIN=0 (no gain), STANDIN_ERROR=message (bad input),
STANDIN_STEP_S (seconds per step, default 0.02). Its start event also says its niceness and
OMP_NUM_THREADS, which the tests check.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if os.environ.get("STANDIN_ERROR"):
        emit(event="error", message=os.environ["STANDIN_ERROR"])
        return 2
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    checkpoint = out / "run" / "checkpoint.json"
    first = json.loads(checkpoint.read_text())["step"] + 1 if args.resume and checkpoint.exists() else 1
    emit(event="start", train_files=7, heldout_files=3, steps=args.steps, out=str(out), nice=os.nice(0),
         omp_threads=os.environ.get("OMP_NUM_THREADS"), threads=args.threads, resumed_from=first - 1)
    emit(event="phase", phase="baseline")
    emit(event="progress", phase="baseline", done=3, total=3)
    emit(event="phase", phase="train")
    step_s = float(os.environ.get("STANDIN_STEP_S", "0.02"))
    for step in range(first, args.steps + 1):
        time.sleep(step_s)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(json.dumps({"step": step}))
        emit(event="progress", phase="train", step=step, steps=args.steps, loss=2.0 - step / args.steps,
             elapsed_s=step * step_s, eta_s=(args.steps - step) * step_s)
        if stopped:
            return 128 + stopped[0]
    gain = os.environ.get("STANDIN_GAIN", "1") == "1"
    (out / "adapter.safetensors").write_bytes(b"stand-in")
    (out / "adapter.json").write_text(json.dumps({"rank": 4}))
    after = 8.3 if gain else 3.9
    report = {"gain": gain, "before": {"exact_match": 4.1}, "after": {"exact_match": after}}
    (out / "report.json").write_text(json.dumps(report))
    (out / "report.txt").write_text(f"exact match 4.1 -> {after}\n")
    emit(event="done", adapter=str(out), report=str(out / "report.json"), summary=f"exact match 4.1 -> {after}",
         gain=gain, exact_match_before=4.1, exact_match_after=after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
