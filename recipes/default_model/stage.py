"""Steps 3-5 of the default model's recipe: token streams, pretraining, LCFT and export, each resumable.

    python recipes/default_model/stage.py prepare  --run /work/runs/default --stage pretrain [--passes N]
    python recipes/default_model/stage.py pretrain --run /work/runs/default [--steps N] [--resume]
    python recipes/default_model/stage.py lcft     --run /work/runs/default [--steps N] [--resume]
    python recipes/default_model/stage.py export   --run /work/runs/default --out models/default

`prepare` tokenises a stage's training files once (FIM transform included) into RUN/streams/<stage>.bin,
in parallel worker processes; `--passes N` lays the files out N times, each time with other FIM
splits, so a run that sees the data several times does not see the same split twice. `pretrain`
starts from random weights (rope base 1e4, 1,024-token windows); `lcft` starts from the newest
pretraining checkpoint with the rope base raised to 1e6 and 4x longer windows (4,096), as Code
Llama's long-context fine-tuning does; both prepare their stream first if it is missing. `export`
writes the newest checkpoint of the latest stage in the engine's HF layout (bf16). Every stage
checkpoints every ~10 minutes into RUN/<stage>/ and continues from there with --resume.

On a GPU (recipes/default_model/gpu_train.sh): `--device cuda --micro-batch 32 --fit-minutes M` sizes
the cosine schedule to M minutes of training, and `shards --stage S --out DIR` writes the weights of
a stage's newest checkpoint as bf16 safetensors files of at most 15 MiB each (what a leased machine
can hand back), which `export --from-shards DIR/S` turns into a model directory here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # served.py beside this file

from engine.atomic import atomic_file  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.model import Transformer, init_weights  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402
from engine.train.data import (  # noqa: E402
    DataConfig,
    WindowSampler,
    build_stream,
    load_stream,
    read_jsonl_files,
    save_stream,
)
from engine.train.recall import RecallDocuments, mix_windows  # noqa: E402
from engine.train.sources import SourceFile  # noqa: E402
from engine.train.trainer import TrainConfig, latest_checkpoint, train  # noqa: E402

# Model shapes the recipe trains (`--shape`; the exported config.json records it). 320x8 is the shipped
# default model's (15.2 M parameters, 30.4 MB in bf16; models/default/MODEL_CARD.md says why). The
# larger ones are for a GPU run (issue 15: a larger default model within the CPU latency limit, 300 ms
# at p50 for a one-line suggestion after a 1K-token prompt on two cores; `shape_latency.py` measures them).
SHAPES = {
    name: dict(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=heads, vocab_size=8192, multiple_of=16,
               norm_eps=1e-5)
    for name, (dim, layers, heads) in {"320x8": (320, 8, 5), "384x10": (384, 10, 6), "448x10": (448, 10, 7),
                                        "512x10": (512, 10, 8), "512x12": (512, 12, 8), "640x12": (640, 12, 10)}.items()
}
DEFAULT_SHAPE = "320x8"
STAGES = {
    "pretrain": dict(seq_len=1024, rope_theta=1e4, micro_batch=4, grad_accum=1, lr=2e-3, warmup=60,
                     max_chars=8_000_000),
    "lcft": dict(seq_len=4096, rope_theta=1e6, micro_batch=1, grad_accum=1, lr=5e-4, warmup=2,
                 max_chars=1_500_000),
    # LCFT continued with long-range recall documents (engine/train/recall.py) in half the windows.
    "lcft-recall": dict(seq_len=2048, rope_theta=1e6, micro_batch=2, grad_accum=1, lr=3e-4, warmup=20,
                        max_chars=24_000_000, recall_share=0.5, context=4096),  # LCFT's context stays
    # "Train as you serve" (recipes/default_model/served.py): repository examples laid out by the
    # language server's own context builder in served_share of the windows, recall documents and
    # ordinary FIM code in the rest, so nothing learnt before is lost. Windows hold one server
    # prompt at the CPU budget (2,048 tokens) with its middle.
    "served": dict(seq_len=2304, rope_theta=1e6, micro_batch=2, grad_accum=1, lr=1.5e-4, warmup=20,
                   max_chars=12_000_000, recall_share=0.3, served_share=0.45, served_spm_rate=0.7, context=4096),
}
# The served stage with 70 % of the server's prompts in PSM order instead of 30 %: the model barely
# infills in PSM (it has to continue a prefix that ended before the suffix) and the PSM layout is the
# one whose prefix stays put as the cursor moves (issue 15, "both FIM orders").
STAGES["served-psm"] = {**STAGES["served"], "served_spm_rate": 0.3}
# Short served prompts (256-1,024 tokens), several to a window, half of them PSM, a quarter with the
# cursor at a line's start (HumanEval's single-line layout). A FIM example teaches where the middle
# begins only at its first token or two, and a PSM middle must begin where the prefix stopped, far
# behind the <MID> piece: windows of one long example hold one such lesson, these hold four or five.
STAGES["served-short"] = {**STAGES["served"], "max_chars": 4_000_000, "recall_share": 0.35, "served_share": 0.6,
                          "served_spm_rate": 0.5, "served_budget": (256, 1024), "served_full_rate": 0.0,
                          "served_kinds": (0.25, 0.15, 0.15, 0.1, 0.1, 0.25, 0.0)}
# Then short and full-budget prompts together, more of them cross-file (`inherited`: `self.` members
# that a base class in another file defines, which the cross-file benchmark asks for and the other
# stages never showed), so the model uses the repository snippets where they hold the answer.
# The first tokens of every served middle weigh served_boundary in the loss: after 665 steps of
# served-short the model repeated the prefix's held-back token first in only 26 % of HumanEval's PSM
# cases (9 % before), and PSM pass@1 had not moved (2 %).
STAGES["served-mix"] = {**STAGES["served-short"], "served_budget": (256, 2048), "served_full_rate": 0.3,
                        "served_kinds": (0.3, 0.1, 0.1, 0.1, 0.05, 0.15, 0.2), "served_boundary": 10.0}
# The served stage again from the shipped model, on new examples, a fifth of whose cursors are now
# `inherited`: the one cross-file kind of the benchmark that no stage had shown.
STAGES["served-more"] = {**STAGES["served"], "max_chars": 6_000_000,
                         "served_kinds": (0.3, 0.15, 0.15, 0.1, 0.1, 0.0, 0.2)}
# Very short served prompts (96-448 tokens), seven or eight to a window, three quarters of them PSM and
# almost a third with the cursor at a line's start. After <MID> in PSM order the shipped model's next
# token is close to its unigram distribution (it writes `# Path: ...`, the start of a served prompt):
# the one token per example that teaches where a PSM middle begins was too rare in every stage so far
# (served-short: 2,687 PSM examples in 1,000 steps; these windows hold about four times as many).
STAGES["served-dense"] = {**STAGES["served"], "max_chars": 3_000_000, "recall_share": 0.3, "served_share": 0.7,
                          "served_spm_rate": 0.25, "served_budget": (96, 448), "served_full_rate": 0.05,
                          "served_kinds": (0.2, 0.15, 0.15, 0.1, 0.1, 0.3, 0.0), "served_per_window": 7.0}
SHARD_BYTES = 15 * 2**20


def read_corpus(run: Path) -> list[SourceFile]:
    """The training files, from corpus/train.jsonl or its xz-compressed copy (what a GPU run carries),
    of the packages corpus_manifest.json includes (see manifest_files)."""
    plain = run / "corpus" / "train.jsonl"
    files = read_jsonl_files(plain if plain.is_file() else plain.with_suffix(".jsonl.xz"))
    return manifest_files(files, run / "corpus" / "manifest.json")


def stage_args(stage: str, serving: bool = False, shape: str = DEFAULT_SHAPE) -> ModelArgs:
    """The model's shape with a stage's rope base; its training window, or (serving) the context
    it is exported with."""
    st = STAGES[stage]
    return ModelArgs(**SHAPES[shape], rope_theta=st["rope_theta"],
                     max_seq_len=st.get("context", st["seq_len"]) if serving else st["seq_len"])


def load_params(model: Transformer, params: dict[str, torch.Tensor]) -> None:
    """Weights into `model`; weights of another shape stop the run with the first tensor that differs
    (a stage started with one --shape from weights trained with another)."""
    own = model.state_dict()
    for name, tensor in params.items():
        if name in own and own[name].shape != tensor.shape:
            raise SystemExit(f"{name}: the weights are {tuple(tensor.shape)}, this model's is {tuple(own[name].shape)}: "
                             "start the stage with the --shape the weights were trained with")
    model.load_state_dict({k: v.float() for k, v in params.items()}, strict=True)


def shape_of(model_args: dict) -> str:
    """The SHAPES name of a checkpoint's stored model arguments."""
    for name, shape in SHAPES.items():
        if all(model_args.get(k) == v for k, v in shape.items()):
            return name
    raise SystemExit(f"no shape in SHAPES has dim={model_args.get('dim')}, n_layers={model_args.get('n_layers')}")


def load_weights_from(model: Transformer, ckpt_dir: Path) -> None:
    state = torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=False)
    load_params(model, state["params"])


PREVIOUS = {"lcft": "pretrain", "lcft-recall": "lcft", "served": "lcft-recall", "served-psm": "served",
            "served-short": "served", "served-mix": "served-short", "served-more": "served",
            "served-dense": "served"}  # the stage each one starts from


def start_from(model: Transformer, previous: str, run: Path, shards: Path | None,
               model_dir: Path | None = None) -> None:
    """The previous stage's weights: from an exported model directory (models/default), the shards a
    GPU run handed back, or the previous stage's newest checkpoint."""
    if model_dir is not None:
        from engine.checkpoints import load_model

        load_params(model, load_model(model_dir, dtype=torch.float32).model.state_dict())
        print(f"starting from {model_dir}", flush=True)
        return
    if shards is not None:
        params, meta = read_shards(shards)
        load_params(model, params)
        print(f"starting from {shards}-*.safetensors ({meta.get('stage')}, step {meta.get('step')})", flush=True)
        return
    src = latest_checkpoint(run / previous)
    if src is None:
        raise SystemExit(f"this stage starts from a {previous} checkpoint (or --from-shards DIR/{previous})")
    load_weights_from(model, src)
    print(f"starting from {src}", flush=True)


def sample_files(files: list, max_chars: int, seed: int) -> list:
    """A seeded random subset of whole files, about max_chars in all, kept in corpus order (so files of
    one package stay together). Tokenising the whole corpus costs more CPU than one run can train on."""
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    keep, total = set(), 0
    for i in order:
        if total >= max_chars:
            break
        keep.add(i)
        total += len(files[i].text)
    return [f for i, f in enumerate(files) if i in keep]


def _tokenise(files: list[SourceFile], tokenizer_path: str, seq_len: int, seed: int):
    return build_stream(files, Tokenizer(tokenizer_path), DataConfig(seq_len=seq_len, seed=seed))


def contiguous_groups(files: list[SourceFile], n: int) -> list[list[SourceFile]]:
    """n runs of consecutive files of about equal size (files of one package stay together)."""
    total = sum(len(f.text) for f in files)
    groups: list[list[SourceFile]] = [[]]
    size = 0
    for f in files:
        if size >= total / n * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append(f)
        size += len(f.text)
    return [g for g in groups if g]


def prepare(stage: str, run: Path, max_chars: int = 0, passes: int = 1, workers: int = 0):
    """RUN/streams/<stage>.bin (memory-mapped) and its metadata, built once.

    The files are cut into runs of consecutive files, tokenised in parallel (each run and pass with its
    own FIM seed) and concatenated, pass after pass. max_chars: 0 the stage's default subset, -1 all.
    """
    st = STAGES[stage]
    out_dir = run / "streams"
    bin_path, meta_path = out_dir / f"{stage}.bin", out_dir / f"{stage}.json"
    if bin_path.is_file() and meta_path.is_file():
        return load_stream(bin_path, json.loads(meta_path.read_text()))
    t = time.time()
    all_files = read_corpus(run)  # served examples draw on every file, the windows on a sample
    limit = max_chars or st["max_chars"]
    files = sample_files(all_files, limit, seed=0) if limit > 0 else all_files
    workers = workers or os.cpu_count() or 1
    groups = contiguous_groups(files, workers * 4)
    tok_path = str(run / "tokenizer.model")
    jobs = [(g, tok_path, st["seq_len"], 1000 * p + i) for p in range(passes) for i, g in enumerate(groups)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.starmap(_tokenise, jobs)
    stream = np.concatenate([p[0] for p in parts])
    docs = {k: sum(p[1][k] for p in parts) for k in ("psm", "spm", "plain")}
    if "recall_share" in st:  # as many windows again, about half of them recall documents
        share = st["recall_share"]
        recall = RecallDocuments(Tokenizer(tok_path), files, seed=passes)
        n_windows = int(stream.size // st["seq_len"] / (1 - share))
        stream, counts = mix_windows(stream, recall, st["seq_len"], n_windows, share, seed=passes)
        docs.update(counts)
    weights = None
    if "served_share" in st:  # repository examples laid out by the server, beside the windows above
        stream, weights, counts = add_served_windows(stream, st, all_files, tok_path, seed=passes)
        docs.update(counts)
    served_mix = f"{st.get('served_share')}:{st.get('served_spm_rate')}"
    for key in ("served_budget", "served_full_rate", "served_kinds", "served_boundary", "served_per_window"):
        if key in st:  # (stages without these keep the hash they had)
            served_mix += f":{st[key]}"
    h = hashlib.sha256(f"{stage}:{st['seq_len']}:{passes}:{len(groups)}:{st.get('recall_share')}:{served_mix}\n".encode())
    h.update(Path(tok_path).read_bytes())
    for f in files:
        h.update(f"{f.repo}\0{f.path}\0{len(f.text)}\n".encode())
    meta = {"data_hash": h.hexdigest()[:16], "n_tokens": int(stream.size), "dtype": str(stream.dtype),
            "files": len(files), "chars": sum(len(f.text) for f in files), "passes": passes, "docs": docs,
            "seq_len": st["seq_len"], "seconds": round(time.time() - t, 1), "loss_weights": weights is not None}
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights is not None:  # before the stream's metadata, which readers take as the sign that all is there
        with atomic_file(out_dir / f"{stage}.weights.bin") as tmp:
            weights.astype(np.float16).tofile(tmp)
    save_stream(stream, meta, bin_path, meta_path)
    print(f"{stage} stream: {meta}", flush=True)
    return load_stream(bin_path, meta)


def manifest_files(files: list[SourceFile], run_manifest: Path) -> list[SourceFile]:
    """Leave out packages the run's corpus has and this recipe's corpus_manifest.json does not: they
    were installed after the shipped model's corpus was recorded, and benchmarks/crossfile.py takes
    some of them as repositories no model of ours has seen. (To train on a new package on purpose,
    record it in corpus_manifest.json.)"""
    if not run_manifest.is_file():
        return files
    def names(path: Path) -> set[str]:
        return {s["name"] for s in json.loads(path.read_text())["sources"] if s["included"]}
    unrecorded = names(run_manifest) - names(Path(__file__).parent / "corpus_manifest.json")
    return [f for f in files if f.repo.rsplit("-", 1)[0] not in unrecorded]


def add_served_windows(stream: np.ndarray, st: dict, files: list[SourceFile], tok_path: str, seed: int):
    """The stream with served-example windows appended (served_share of all windows; the sampler
    draws windows in a random order, so where they sit does not matter), drawn from `files`: the whole
    corpus, not the stage's sample, so that each package keeps all its files. Also the loss weight of
    every token (None unless the stage weighs the middles' first tokens: served_boundary)."""
    from served import served_examples

    from lsp_server.adapt.examples import KIND_WEIGHTS, SERVER_CPU_BUDGET, LossWeights, pack_windows

    seq_len, share = st["seq_len"], st["served_share"]
    n_served = int(stream.size // seq_len * share / (1 - share))
    # About 1.3 examples fill a window (a prompt at the full budget fills one alone); short ones, ~4.
    per_window = st.get("served_per_window", 4.0 if "served_budget" in st else 1.4)
    examples = served_examples(Tokenizer(tok_path), files, seq_len, seed=seed, per_cycle=int(n_served * per_window),
                               spm_rate=st["served_spm_rate"], budgets=st.get("served_budget", (384, SERVER_CPU_BUDGET)),
                               full_budget_rate=st.get("served_full_rate", 0.5),
                               kind_weights=st.get("served_kinds", KIND_WEIGHTS),
                               loss_weights=LossWeights(boundary=st.get("served_boundary", 1.0)))
    served, served_weights, counts = pack_windows(examples, seq_len, n_served, stream, seed=seed)
    ordinary = stream[: stream.size // seq_len * seq_len]
    weights = None if served_weights is None else np.concatenate([np.ones(ordinary.size, np.float32), served_weights])
    return np.concatenate([ordinary, served]), weights, counts


def run_stage(stage: str, run: Path, a: argparse.Namespace) -> None:
    st = STAGES[stage]
    stream, meta = prepare(stage, run, a.max_chars, a.passes, a.workers)
    print(f"data {meta['data_hash']}: {meta['n_tokens']:,} tokens, docs {meta['docs']}", flush=True)
    args = stage_args(stage, shape=a.shape)
    model = Transformer(args)
    init_weights(model, std=0.02, seed=0)
    if stage != "pretrain":
        start_from(model, PREVIOUS[stage], run, a.from_shards, a.from_model)
    model.to(a.device)
    print(f"model: {model.num_parameters() / 1e6:.2f} M parameters, {args}", flush=True)
    cfg = TrainConfig(
        steps=a.steps, seq_len=st["seq_len"], micro_batch=a.micro_batch or st["micro_batch"],
        grad_accum=st["grad_accum"], lr=a.lr or st["lr"], warmup_steps=a.warmup or st["warmup"],
        min_lr_ratio=0.1, weight_decay=0.1, seed=0, dtype="bf16", device=a.device, loss_chunk=a.loss_chunk,
        gradient_checkpointing=False, checkpoint_every_s=600, log_every=a.log_every, threads=a.threads,
        fit_to_seconds=a.fit_minutes * 60,
        extra={"stage": stage, "data": meta, "model_args": args.to_dict()},
    )
    weights = None
    if meta.get("loss_weights"):
        weights = np.memmap(run / "streams" / f"{stage}.weights.bin", dtype=np.float16, mode="r", shape=stream.shape)
    sampler = WindowSampler(stream, cfg.seq_len, cfg.micro_batch, cfg.seed, loss_weights=weights)
    limit = a.max_minutes or (a.fit_minutes * 1.05 if a.fit_minutes else None)
    train(model, sampler, cfg, run / stage, resume=a.resume, time_limit_s=limit * 60 if limit else None)


def newest(run: Path, stage: str | None) -> tuple[str, Path]:
    """A stage's newest checkpoint; without a stage, that of the stage trained last (a run may hold
    several experimental stages that start from the same one)."""
    found = [(name, ckpt) for name in ((stage,) if stage else STAGES)
             if (ckpt := latest_checkpoint(run / name)) is not None]
    if not found:
        raise SystemExit(f"no checkpoint under {run}")
    return max(found, key=lambda item: item[1].stat().st_mtime)


def write_shards(run: Path, stage: str, out: Path) -> None:
    """The weights of a stage's newest checkpoint as bf16 safetensors files of at most SHARD_BYTES."""
    from safetensors.torch import save_file

    _, ckpt = newest(run, stage)
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    meta = {"stage": stage, "step": str(state["step"]), "model_args": json.dumps(state["model_args"])}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state["params"].items():
        t = t.to(torch.bfloat16).contiguous()
        if size + t.nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    # Every shard is written in full before any replaces the previous set (engine/atomic.py).
    with contextlib.ExitStack() as stack:
        for i, shard in enumerate(shards):
            tmp = stack.enter_context(atomic_file(out / f"{stage}-{i}.safetensors"))
            save_file(shard, str(tmp), metadata=meta)
    for stale in out.glob(f"{stage}-*.safetensors"):  # a previous, longer set's extra shards
        index = stale.stem.removeprefix(f"{stage}-")
        if index.isdigit() and int(index) >= len(shards):
            stale.unlink()
    print(f"{ckpt} (step {state['step']}) -> {len(shards)} files {out}/{stage}-*.safetensors", flush=True)


def read_shards(prefix: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    params: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    paths = sorted(prefix.parent.glob(f"{prefix.name}-*.safetensors"))
    if not paths:
        raise SystemExit(f"no {prefix}-*.safetensors")
    for path in paths:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
            params.update({k: fh.get_tensor(k) for k in fh.keys()})
    return params, meta


def export(run: Path, out: Path, from_shards: Path | None) -> None:
    from engine.checkpoints import save_hf_checkpoint

    if from_shards is not None:
        params, meta = read_shards(from_shards)
        stage, step, source = meta["stage"], int(meta["step"]), str(from_shards)
        stored = json.loads(meta["model_args"])
    else:
        stage, ckpt = newest(run, None)
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        params, step, source, stored = state["params"], state["step"], str(ckpt), state["model_args"]
    model = Transformer(stage_args(stage, serving=True, shape=shape_of(stored)))
    load_params(model, params)
    # A completion model: the language server offers no instruct code actions on it (lsp_server/capability.py).
    training_state = json.dumps({"stage": stage, "checkpoint": source, "step": step}, indent=1) + "\n"
    save_hf_checkpoint(model, run / "tokenizer.model", out, dtype=torch.bfloat16, config_extra={"instruct": False},
                       extra_files={"training_state.json": training_state})
    print(f"exported {source} ({stage}, step {step}) to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["prepare", *STAGES, "shards", "export"])
    ap.add_argument("--run", type=Path, default=Path("/work/runs/default"))
    ap.add_argument("--stage", choices=list(STAGES), help="prepare/shards: which stage")
    ap.add_argument("--shape", choices=list(SHAPES), default=DEFAULT_SHAPE,
                    help=f"the model's shape, dim x layers (default {DEFAULT_SHAPE}: the shipped model's)")
    ap.add_argument("--steps", type=int, default=1000, help="optimiser steps (the most, with --fit-minutes)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=0, help="sequences per step (default per stage)")
    ap.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default per stage)")
    ap.add_argument("--warmup", type=int, default=0, help="warm-up steps (default per stage)")
    ap.add_argument("--loss-chunk", type=int, default=4096, help="tokens per cross-entropy chunk")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    ap.add_argument("--fit-minutes", type=float, default=0.0, help="size the cosine schedule to this long")
    ap.add_argument("--max-chars", type=int, default=0, help="a random subset of files (0: per stage, -1: all)")
    ap.add_argument("--passes", type=int, default=1, help="prepare: passes over the files, each with new FIM splits")
    ap.add_argument("--workers", type=int, default=0, help="prepare: tokeniser processes (default: every core)")
    ap.add_argument("--from-shards", type=Path, default=None, help="export, or a stage's start: DIR/STAGE written by `shards`")
    ap.add_argument("--from-model", type=Path, default=None,
                    help="a stage's start: an exported model directory (e.g. models/default)")
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    a = ap.parse_args()
    if a.action == "export":
        export(a.run, a.out, a.from_shards)
    elif a.action == "shards":
        write_shards(a.run, a.stage or "lcft", a.out)
    elif a.action == "prepare":
        prepare(a.stage or "pretrain", a.run, a.max_chars, a.passes, a.workers)
    else:
        run_stage(a.action, a.run, a)


if __name__ == "__main__":
    main()
