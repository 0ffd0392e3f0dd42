"""The before/after report written beside an adapter: report.json, report.txt (what the editor shows)
and report.png (exact match per kind of cursor, before and after)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.atomic import write_text_atomic

from .evaluate import EVAL_KINDS

MIN_GAIN_POINTS = 1.0  # held-out exact match must rise by this much for the adapter to be offered


def verdict(before: dict, after: dict) -> tuple[bool, str]:
    delta = after["exact_match"] - before["exact_match"]
    if delta >= MIN_GAIN_POINTS:
        return True, (f"held-out single-line exact match {before['exact_match']:.1f} % -> "
                      f"{after['exact_match']:.1f} % (+{delta:.1f} points)")
    return False, (f"no gain on held-out files (exact match {before['exact_match']:.1f} % -> "
                   f"{after['exact_match']:.1f} %): not worth using")


def summary_text(name: str, heldout: list[str], train_files: int, steps: int, train_seconds: float,
                 before: dict, after: dict, message: str) -> str:
    rows = [("single-line exact match", f"{before['exact_match']:.1f} %", f"{after['exact_match']:.1f} %"),
            ("edit similarity", f"{before['edit_similarity']:.1f}", f"{after['edit_similarity']:.1f}")]
    for kind in EVAL_KINDS:
        b, a = before["by_kind"][kind], after["by_kind"][kind]
        if b["cases"]:
            rows.append((f"  {kind} ({b['cases']} cases)", f"{b['exact_match']:.1f} %", f"{a['exact_match']:.1f} %"))
    for n in sorted(before.get("perplexity", {}), key=int):
        b, a = before["perplexity"][n], after.get("perplexity", {}).get(n)
        rows.append((f"perplexity at {n} tokens", f"{b:.2f}", f"{a:.2f}" if a else "-"))
    width = max(len(r[0]) for r in rows)
    lines = [f"Adapter for {name}: {steps} steps in {train_seconds / 60:.1f} min on {train_files} files; "
             f"measured on {len(heldout)} held-out files ({before['cases']} cursors).",
             f"{'':{width}}  {'before':>8}  {'after':>8}"]
    lines += [f"{label:{width}}  {b:>8}  {a:>8}" for label, b, a in rows]
    lines.append(message[0].upper() + message[1:] + ".")
    return "\n".join(lines)


def write_report(out: Path, *, workspace: Path, base_model: Path, recipe: dict, heldout: list[str],
                 train_files: int, train_seconds: float, before: dict, after: dict) -> dict[str, Any]:
    gain, message = verdict(before, after)
    text = summary_text(workspace.name, heldout, train_files, recipe["steps"], train_seconds, before, after, message)
    report = {"workspace": str(workspace), "base_model": str(base_model), "steps": recipe["steps"],
              "train_seconds": round(train_seconds, 1), "recipe": recipe, "heldout_files": heldout,
              "before": _without_cases(before), "after": _without_cases(after), "gain": gain, "verdict": message, "summary": text}
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "report.txt", text + "\n")
    write_text_atomic(out / "cases.json", json.dumps({"before": before["results"], "after": after["results"]}) + "\n")
    _plot(out / "report.png", before, after)
    return report


def _without_cases(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "results"}  # every case goes to cases.json instead


def _plot(path: Path, before: dict, after: dict) -> None:
    """Held-out perplexity by context length, before and after (nothing when the files were too short)."""
    from engine.evaluate.plot import plot_lines

    lengths = sorted(before.get("perplexity", {}), key=int)
    if not lengths:
        return
    xs = [float(n) for n in lengths]
    plot_lines([(name, xs, [scores["perplexity"].get(n, 0.0) for n in lengths])
                for name, scores in (("before", before), ("after", after))],
               path, title="held-out perplexity by context length", xlabel="context tokens", ylabel="perplexity")
