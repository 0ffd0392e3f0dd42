"""GPU benchmark of the engine's forward pass with 7B-shaped random bf16 weights, against the HBM limit.

    python benchmarks/gpu_bench.py --out results/gpu.md      # on a CUDA machine (H100: ~3 minutes)
    python benchmarks/gpu_bench.py --smoke --out /tmp/s.md   # tiny shapes on CPU: checks the script runs

Measures, each on the same weights (built directly on the device, no checkpoint files):
- prefill time of each context (chunked past --chunk tokens, as the engine prefills long prompts);
- decode tok/s at several contexts, eager (the model's forward) and CUDA-graph (engine.cuda_graph),
  beside the bandwidth limit: bytes read per token (weights minus embedding, plus the KV cache so
  far) over the HBM bandwidth;
- warm-keystroke latency: a cached prefix extended by a few tokens, first logits, vs a cold prefill;
- Hugging Face transformers' LlamaForCausalLM sharing the same weight tensors: decode tok/s;
- decode tok/s with int8 and int4 weights (engine/quant.py, Triton kernels on CUDA) against the
  bandwidth limit of the quantized bytes;
- peak memory. Also checks that the graph decode and the eager decode give the same logits.
Writes a markdown table (and prints it).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import kernels  # noqa: E402
from engine.cache import KVCache  # noqa: E402
from engine.config import ModelArgs  # noqa: E402
from engine.generate import PREFILL_CHUNK, decode_step, prefill  # noqa: E402
from engine.model import Transformer  # noqa: E402
from engine.quant import QuantSpec, quantize_model  # noqa: E402

CODELLAMA_7B = ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, vocab_size=32016, rope_theta=1e6)
TINY = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, multiple_of=32, rope_theta=1e6)
# Spec-sheet HBM bandwidth by device name (bytes/s); otherwise the measured copy bandwidth is used.
SPEC_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


@dataclass
class Report:
    device: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (measure, value, note)

    def add(self, measure: str, value: str, note: str = "") -> None:
        self.rows.append((measure, value, note))
        print(f"{measure:<48} {value:>14}  {note}", flush=True)

    def markdown(self, header: str) -> str:
        lines = [header, "", "| measure | value | note |", "|---|---|---|"]
        lines += [f"| {m} | {v} | {n} |" for m, v, n in self.rows]
        return "\n".join(lines) + "\n"


class Clock:
    """Wall time of GPU work: synchronise before and after."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def build_model(args: ModelArgs, device: torch.device, dtype: torch.dtype) -> Transformer:
    """Random weights created on the device in `dtype` (7B: no host copy, ~13 GB)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Transformer(args)
    finally:
        torch.set_default_dtype(old)
    # nn.Linear's default init keeps activations bounded; scale the output layer down a little so
    # logits of random weights stay in a sane range (nothing here depends on their values).
    with torch.no_grad():
        model.output.weight.mul_(0.5)
    return model.eval()


def random_tokens(n: int, vocab: int, seed: int = 0) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n,), generator=gen).tolist()


def kv_bytes_per_token(args: ModelArgs, kv_dtype: torch.dtype) -> float:
    """K and V of one position over all layers; int8 adds a float32 scale per head."""
    per_head = args.head_dim * torch.tensor([], dtype=kv_dtype).element_size() + (4 if kv_dtype == torch.int8 else 0)
    return 2 * args.n_layers * args.n_kv_heads * per_head


def decode_bytes_per_token(model: Transformer, context: int, kv_dtype: torch.dtype) -> float:
    """Bytes a batch-1 decode step must read: every weight but the embedding table (quantized weights
    at their own size), and the KV cache."""
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors) - model.tok_embeddings.weight.nbytes
    return weights + kv_bytes_per_token(model.args, kv_dtype) * context


def measured_copy_bandwidth(device: torch.device, clock: Clock) -> float:
    """Bytes read + written per second of a large device-to-device copy."""
    n = (1 << 30) if device.type == "cuda" else (1 << 24)
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    t = min(clock.time(lambda: b.copy_(a)) for _ in range(5))
    return 2 * n / t


# ---- decode and prefill, through the engine's own functions ----------------------------------------


def greedy_decode(step: Callable[[int], torch.Tensor], logits: torch.Tensor, steps: int) -> torch.Tensor:
    """The generator's loop: read the greedy token on the host (one sync per token), feed it back."""
    for _ in range(steps):
        logits = step(int(torch.argmax(logits)))
    return logits


def bench_decode(
    model: Transformer, context: int, steps: int, opts: argparse.Namespace, report: Report, clock: Clock
) -> None:
    """Prefill `context` tokens (timed), then decode `steps` tokens eagerly and with the CUDA graph."""
    device = opts.device
    cache = KVCache(model.args, context + steps + 8, device, opts.kv_dtype)
    prompt = random_tokens(context, model.args.vocab_size)
    reset_peak(device)
    box: list[torch.Tensor] = []
    # The first prefill into a fresh cache pays one-time costs (allocation, first use of each chunk
    # shape); the second is what a user's next cold prompt costs. Both are reported.
    first_t = clock.time(lambda: box.append(prefill(model, cache, prompt, chunk_size=opts.chunk)))
    cache.truncate(0)
    t = clock.time(lambda: box.append(prefill(model, cache, prompt, chunk_size=opts.chunk)))
    first_logits = box[-1]
    a = model.args
    flops = 2 * (model.num_parameters() - model.tok_embeddings.weight.numel()) * context
    flops += 2 * a.n_layers * a.dim * context**2  # causal attention: QK^T and PV over half the square
    report.add(
        f"prefill {context} tokens",
        f"{t:.2f} s",
        f"{context / t:.0f} tok/s, {flops / t / 1e12:.0f} TFLOP/s; chunks of {opts.chunk}; first prefill {first_t:.2f} s",
    )

    report.add(f"KV cache @ {context} ctx", f"{cache.nbytes() / 2**30:.2f} GiB",
               f"{cache.nbytes() / cache.capacity:.0f} bytes/token measured, {opts.kv_dtype}")  # fmt: skip
    limit = opts.bandwidth / decode_bytes_per_token(model, context, opts.kv_dtype)

    def eager(token: int) -> torch.Tensor:
        return decode_step(model, cache, token)

    # Eager with the kernels the dispatch picks (Triton on CUDA), then with the PyTorch references.
    for backend in ("auto", "reference") if context == opts.decode_contexts[0] else ("auto",):
        kernels.use_backend(backend)
        try:
            cache.truncate(context)
            greedy_decode(eager, first_logits, 2)  # warm-up
            cache.truncate(context)
            t = clock.time(lambda: greedy_decode(eager, first_logits, steps))
        finally:
            kernels.use_backend("auto")
        tps = steps / t
        report.add(
            f"decode tok/s @ {context} ctx, eager{'' if backend == 'auto' else ', reference kernels'}",
            f"{tps:.1f}",
            f"{100 * tps / limit:.0f}% of the bandwidth limit {limit:.0f} tok/s",
        )
    cache.truncate(context)
    eager_logits = greedy_decode(eager, first_logits, 1)
    cache.truncate(context)

    if device.type == "cuda":
        from engine.cuda_graph import DecodeGraph

        graph = DecodeGraph(model, cache)
        graph_logits = greedy_decode(graph.decode, first_logits, 1)
        err = (graph_logits - eager_logits).abs().max().item()
        scale = eager_logits.abs().max().item()
        if not err <= 2e-2 * max(scale, 1.0):
            raise AssertionError(
                f"graph decode differs from eager: max |diff| {err:.3g} (logit scale {scale:.3g})"
            )
        cache.truncate(context)
        t = clock.time(lambda: greedy_decode(graph.decode, first_logits, steps))
        tps = steps / t
        report.add(
            f"decode tok/s @ {context} ctx, CUDA graph",
            f"{tps:.1f}",
            f"{100 * tps / limit:.0f}% of limit; logits vs eager max diff {err:.2g}; peak {peak_note(device)}",
        )
    else:
        # No graphs on CPU: check the static-layout step (what the graph records) against eager instead.
        from engine.cuda_graph import decode_step as static_step

        pos = torch.tensor([context], device=device)
        rope = model.rope(0, cache.capacity, device)
        token = torch.tensor([[int(torch.argmax(first_logits))]], device=device)
        static_logits = static_step(model, cache, token, pos, rope)[0].float()
        err = (static_logits - eager_logits).abs().max().item()
        if not err <= 1e-3 * max(eager_logits.abs().max().item(), 1.0):
            raise AssertionError(f"static decode step differs from eager: max |diff| {err:.3g}")
        report.add(
            f"static decode step @ {context} ctx vs eager", f"{err:.2g}", "max |logit diff| (CPU check)"
        )


def bench_quantized_decode(
    model: Transformer, spec: QuantSpec, context: int, steps: int, opts: argparse.Namespace, report: Report,
    clock: Clock,
) -> None:
    """Decode tok/s with every linear layer quantized (a copy of the model; the original is kept)."""
    qmodel = quantize_model(copy.deepcopy(model), spec)
    cache = KVCache(qmodel.args, context + steps + 8, opts.device, opts.kv_dtype)
    logits = prefill(qmodel, cache, random_tokens(context, qmodel.args.vocab_size))
    greedy_decode(lambda token: decode_step(qmodel, cache, token), logits, 2)  # compiles the kernels
    cache.truncate(context)
    t = clock.time(lambda: greedy_decode(lambda token: decode_step(qmodel, cache, token), logits, steps))
    limit = opts.bandwidth / decode_bytes_per_token(qmodel, context, opts.kv_dtype)
    group = f", group {spec.group_size}" if spec.bits == 4 else ""
    report.add(f"decode tok/s @ {context} ctx, {spec.name} weights{group}", f"{steps / t:.1f}",
               f"{100 * steps / t / limit:.0f}% of the bandwidth limit {limit:.0f} tok/s of the quantized bytes")


def bench_keystroke(
    model: Transformer, context: int, opts: argparse.Namespace, report: Report, clock: Clock
) -> None:
    """Time to the first token's logits after typing: the engine keeps the cached prefix (KV reuse)
    and runs only the new tokens; cold recomputes the whole prompt."""
    new = 4  # a keystroke or two usually adds 1-3 tokens
    cache = KVCache(model.args, context + new + 8, opts.device, opts.kv_dtype)
    prompt = random_tokens(context + new, model.args.vocab_size, seed=2)

    def cold() -> None:
        cache.truncate(0)
        prefill(model, cache, prompt, chunk_size=opts.chunk)

    def warm() -> None:
        cache.truncate(context)  # what KV reuse does: keep the matching prefix
        prefill(model, cache, prompt[context:], chunk_size=opts.chunk)

    cold()
    cold_t = clock.time(cold)
    warm()
    warm_t = min(clock.time(warm) for _ in range(3))
    report.add(
        f"keystroke @ {context} ctx (+{new} tokens), warm",
        f"{warm_t * 1e3:.1f} ms",
        f"cold prefill {cold_t * 1e3:.0f} ms: {cold_t / warm_t:.0f}x faster",
    )


# ---- transformers on the same weights -------------------------------------------------------------


def hf_on_same_weights(model: Transformer):  # noqa: ANN201 - transformers.LlamaForCausalLM
    """LlamaForCausalLM whose parameters are our tensors (no copy): built on meta, then assigned."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg_dict = model.args.to_hf_config()
    cfg_dict.pop("torch_dtype", None)
    config = LlamaConfig(**cfg_dict)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        hf = LlamaForCausalLM(config)
    names = {
        "attention.wq": "self_attn.q_proj",
        "attention.wk": "self_attn.k_proj",
        "attention.wv": "self_attn.v_proj",
        "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj",
        "feed_forward.w2": "mlp.down_proj",
        "feed_forward.w3": "mlp.up_proj",
        "attention_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("layers."):
            _, idx, rest = name.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            state[f"model.layers.{idx}.{names[module]}.{leaf}"] = tensor
        else:
            state[{"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                   "output.weight": "lm_head.weight"}[name]] = tensor  # fmt: skip
    hf.load_state_dict(state, strict=True, assign=True)
    device = model.output.weight.device
    with torch.device(device):
        hf.model.rotary_emb = LlamaRotaryEmbedding(config)  # its buffers were on meta
    return hf.eval()


@torch.no_grad()
def bench_hf(
    model: Transformer, context: int, steps: int, opts: argparse.Namespace, report: Report, clock: Clock
) -> None:
    from transformers import DynamicCache

    hf = hf_on_same_weights(model)
    prompt = torch.tensor([random_tokens(context, model.args.vocab_size)], device=opts.device)
    # Same weights, same numbers: the first logits must agree with ours.
    ours = model(prompt[:, :64])[:, -1].float()
    theirs = hf(input_ids=prompt[:, :64]).logits[:, -1].float()
    err = (ours - theirs).abs().max().item()
    if not err <= 5e-2 * max(ours.abs().max().item(), 1.0):
        raise AssertionError(f"transformers disagrees with our model on the same weights: max diff {err:.3g}")

    def run() -> None:
        cache = DynamicCache()
        out = hf(input_ids=prompt, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        clock.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = hf(input_ids=tok, past_key_values=cache, use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
        clock.sync()
        run.tps = steps / (time.perf_counter() - t0)  # type: ignore[attr-defined]

    run()  # warm-up
    run()
    limit = opts.bandwidth / decode_bytes_per_token(model, context, opts.kv_dtype)
    tps = run.tps  # type: ignore[attr-defined]
    report.add(
        f"transformers decode tok/s @ {context} ctx",
        f"{tps:.1f}",
        f"{100 * tps / limit:.0f}% of limit; LlamaForCausalLM, sdpa, DynamicCache; logits diff {err:.2g}",
    )


# ---- main -----------------------------------------------------------------------------------------


def warm_up(model: Transformer, opts: argparse.Namespace) -> None:
    """Compile the Triton kernels for prefill (first and later chunks) and decode before timing."""
    cache = KVCache(opts.args, 200, opts.device, opts.kv_dtype)
    logits = prefill(model, cache, random_tokens(128, 100), chunk_size=64)
    greedy_decode(lambda token: decode_step(model, cache, token), logits, 2)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_note(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a on CPU"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def start(device: torch.device) -> tuple[Clock, Report]:
    """A benchmark's start: seeded, a clock, an empty report named after the device."""
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test: tiny model)"
    return Clock(device), Report(name)


def fill_defaults(opts: argparse.Namespace, defaults: dict) -> None:
    """Options left unset take these values."""
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, not speed")
    p.add_argument("--out", type=Path, help="write the markdown table here")
    p.add_argument("--decode-contexts", type=int, nargs="*", help="default 1024 16384 100000")
    p.add_argument("--keystroke-contexts", type=int, nargs="*", help="default 4096 16384")
    p.add_argument("--hf-context", type=int, help="default 1024; 0 skips transformers")
    p.add_argument("--steps", type=int, help="decode steps timed (default 64)")
    p.add_argument("--chunk", type=int, help=f"prefill chunk length (default: the engine's, {PREFILL_CHUNK})")
    p.add_argument("--skip", nargs="*", default=[], choices=["decode", "keystroke", "hf", "quant"])
    p.add_argument("--kv-cache-dtype", choices=("auto", "int8"), default="auto",
                   help="KV cache storage: the model's dtype (auto) or int8 with per-token, per-head scales")
    opts = p.parse_args(argv)
    if opts.smoke:
        defaults = dict(decode_contexts=[70], keystroke_contexts=[60], hf_context=24, steps=3, chunk=32)  # fmt: skip
        opts.args, opts.device, opts.dtype = TINY, torch.device("cpu"), torch.float32
        torch.set_num_threads(1)  # a tiny model: more threads only contend with other work
    else:
        defaults = dict(decode_contexts=[1024, 16384, 100_000], keystroke_contexts=[4096, 16384],
                        hf_context=1024, steps=64, chunk=PREFILL_CHUNK)  # fmt: skip
        if not torch.cuda.is_available():
            p.error("no CUDA device: run with --smoke on CPU")
        opts.args, opts.device, opts.dtype = CODELLAMA_7B, torch.device("cuda"), torch.bfloat16
    fill_defaults(opts, defaults)
    opts.kv_dtype = torch.int8 if opts.kv_cache_dtype == "int8" else opts.dtype
    return opts


def main(argv: list[str] | None = None) -> str:
    opts = parse(argv)
    device = opts.device
    clock, report = start(device)
    name = report.device
    copy_bw = measured_copy_bandwidth(device, clock)
    spec = next((bw for key, bw in SPEC_BANDWIDTH.items() if key in name), None)
    opts.bandwidth = spec or copy_bw
    report.add("HBM bandwidth used for limits", f"{opts.bandwidth / 1e12:.2f} TB/s",
               f"{'spec sheet' if spec else 'measured'}; copy measured {copy_bw / 1e12:.2f} TB/s")  # fmt: skip

    t0 = time.perf_counter()
    model = build_model(opts.args, device, opts.dtype)
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    report.add("model", f"{weights_gb:.2f} GB", f"{model.num_parameters() / 1e9:.2f}B params, {opts.dtype}, built in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    kv_token = kv_bytes_per_token(opts.args, opts.kv_dtype)
    report.add("KV cache bytes per token", f"{kv_token:.0f}", f"{opts.kv_dtype}; 100K tokens = {kv_token * 1e5 / 2**30:.1f} GiB")  # fmt: skip

    # Compile the Triton kernels for prefill (first chunk and later chunks) and decode shapes.
    warm_up(model, opts)
    # transformers first, before the long-context caches take the memory.
    phases: list[tuple[str, str, Callable[[], None]]] = []
    if "hf" not in opts.skip and opts.hf_context:
        phases.append(
            (
                "hf",
                f"transformers @ {opts.hf_context}",
                lambda: bench_hf(model, opts.hf_context, opts.steps, opts, report, clock),
            )
        )
    for spec in (QuantSpec(8), QuantSpec(4, 32)):
        phases.append(
            (
                "quant",
                f"{spec.name} decode @ {opts.decode_contexts[0]}",
                lambda spec=spec: bench_quantized_decode(
                    model, spec, opts.decode_contexts[0], opts.steps, opts, report, clock),
            )
        )
    for ctx in opts.decode_contexts:
        phases.append(
            (
                "decode",
                f"decode @ {ctx}",
                lambda ctx=ctx: bench_decode(model, ctx, opts.steps, opts, report, clock),
            )
        )
    for ctx in opts.keystroke_contexts:
        phases.append(
            (
                "keystroke",
                f"keystroke @ {ctx}",
                lambda ctx=ctx: bench_keystroke(model, ctx, opts, report, clock),
            )
        )
    failures = 0
    for kind, label, run in phases:
        if kind in opts.skip:
            continue
        try:
            run()
        except (RuntimeError, AssertionError) as err:  # out of memory is a RuntimeError
            if opts.smoke:
                raise  # the smoke test must see every failure
            # One GPU session, one run: record the failure and go on with the other phases.
            failures += 1
            report.add(
                f"{label}: FAILED", type(err).__name__, str(err).splitlines()[0][:200].replace("|", "/")
            )
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.add("peak memory allocated, last phase", peak_note(device), "torch.cuda.max_memory_allocated")

    header = (
        f"### Engine forward pass, {opts.args.n_layers}-layer dim-{opts.args.dim} model, random {opts.dtype} "
        f"weights, {opts.kv_dtype} KV cache, on {name}\n\nCommand: `python benchmarks/gpu_bench.py {' '.join(argv or sys.argv[1:])}`; "
        f"torch {torch.__version__}."
    )
    text = report.markdown(header)
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(text)
    if failures:
        raise SystemExit(f"{failures} benchmark phase(s) failed; see the table")
    return text


if __name__ == "__main__":
    main()
