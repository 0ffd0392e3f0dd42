"""Markdown tables with one column group per evaluated system (model, or model + adapter), so a
before/after comparison reads across a row."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def humaneval_table(names: Sequence[str], results: Sequence[dict]) -> str:
    """results[i] = {fmt: {"cases", "pass@1", "exact_match", ...}} for system i."""
    formats = list(results[0])
    header = ["format", "cases"] + [f"{n}: {m}" for n in names for m in ("pass@1", "exact")]
    rows = []
    for fmt in formats:
        row: list[object] = [fmt.upper(), results[0][fmt]["cases"]]
        for r in results:
            row += [pct(r[fmt]["pass@1"]), pct(r[fmt]["exact_match"])]
        rows.append(row)
    return table(header, rows)


def infill_table(names: Sequence[str], results: Sequence[dict]) -> str:
    formats = list(results[0])
    header = ["format", "cases"] + [f"{n}: exact" for n in names]
    rows = [[fmt.upper(), results[0][fmt]["cases"]] + [pct(r[fmt]["exact_match"]) for r in results] for fmt in formats]
    return table(header, rows)


def keys_table(names: Sequence[str], results: Sequence[dict]) -> str:
    """results[i]["by_length"] = {length: {position: accuracy}}."""
    first = results[0]["by_length"]
    positions = list(next(iter(first.values())))
    header = (["model"] if len(names) > 1 else []) + ["context"] + [f"key at {p:g}" for p in positions] + ["mean"]
    rows = []
    for name, r in zip(names, results, strict=True):
        for length, accs in r["by_length"].items():
            vals = [accs[p] for p in positions]
            rows.append(([name] if len(names) > 1 else []) + [length] + [pct(v) for v in vals]
                        + [pct(sum(vals) / len(vals))])
    return table(header, rows)


def perplexity_table(names: Sequence[str], results: Sequence[dict]) -> str:
    lengths = list(results[0]["by_length"])
    header = ["context"] + [f"{i + 1}. {n}: ppl" for i, n in enumerate(names)]
    rows = [[length] + [f"{r['by_length'][length]['ppl']:.3f}" for r in results] for length in lengths]
    return table(header, rows)
