"""The one-token decode step on CPU, with the model's own kernels and none of its per-call overhead.

Why: a small model's decode step on CPU costs per op, not per weight byte. The default model's step
through `Transformer.forward` dispatched about 630 aten ops and a hundred module calls for 33 matrix
products and 16 attention products (4.2 ms at 1K tokens of context with int8 weights, where those
products take 1.4 ms). This step runs the same kernels on the same values (the logits are bit for bit
those of the forward pass: tests/engine/test_cpu_step.py) and skips the rest: module calls, the kernel
dispatch, a rotary table built per layer, and reshaping of one-row tensors.

It reads the model's modules at every call and keeps no state of its own, so whatever changes the
model (an adapter, a cast, unfused projections) changes what it computes, as it changes the forward.
Projections that are not a plain `nn.Linear` or an unadapted `QuantizedLinear` are called as modules.
`applies` says when the forward pass must run instead: grad mode on, a kernel backend forced, an int8
KV cache, more keys than the one-query attention serves, a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine import kernels
from engine.cache import KVCache
from engine.fused import FusedProjections
from engine.kernels import quant_cpu, reference
from engine.model import Transformer
from engine.quant import QuantizedLinear


def applies(cache: KVCache) -> bool:
    """Whether `step` computes what the forward pass would for the next token of `cache`."""
    return (cache.device.type == "cpu" and cache.batch == 1 and not cache.quantized
            and cache.length + 1 <= reference.ONE_QUERY_MAX_KEYS
            and kernels.backend_name() == "auto" and not torch.is_grad_enabled())


def _project(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x) for one row x, calling the kernel directly where the layer is a plain one."""
    if type(layer) is nn.Linear:
        return F.linear(x, layer.weight, layer.bias)
    if type(layer) is QuantizedLinear and layer.lora is None:
        return quant_cpu.quantized_matmul(layer, x)  # what kernels.quantized_matmul calls on CPU
    return layer(x)


def _projections(fused: FusedProjections | None, parts: tuple[nn.Module, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of `parts` for x: one stacked matmul where the fused form still applies."""
    if fused is not None and fused.applies(x, parts):
        return fused(x)
    return [_project(p, x) for p in parts]


@torch.inference_mode()
def step(model: Transformer, cache: KVCache, token: int) -> torch.Tensor:
    """engine.generate.decode_step's contract (see `applies` for when it holds)."""
    pos = cache.length
    cache.ensure_capacity(pos + 1)
    args = model.args
    n_heads, n_kv, head_dim = args.n_heads, cache.k[0].shape[1], args.head_dim
    cos, sin = model.rope(pos, pos + 1, cache.device)
    cos2, sin2 = reference.rotary_tables(cos, sin)  # built once for every layer
    h = model.tok_embeddings.weight[token : token + 1]  # (1, dim)
    for layer in model.layers:
        attn, ff = layer.attention, layer.feed_forward
        x = reference.rms_norm(h, layer.attention_norm.weight, layer.attention_norm.eps)
        q, k, v = _projections(attn.fused_qkv, (attn.wq, attn.wk, attn.wv), x)
        q = reference.rotate(q.view(n_heads, head_dim), cos2, sin2)
        k = reference.rotate(k.view(n_kv, head_dim), cos2, sin2)
        keys, values = cache.k[attn.layer_id][0], cache.v[attn.layer_id][0]  # (Hk, capacity, D)
        keys[:, pos] = k
        values[:, pos] = v.view(n_kv, head_dim)
        # reference._one_query_attention, without its reshaping of a batch
        out = reference.grouped_attention(q.view(n_kv, n_heads // n_kv, head_dim).float(),
                                          keys[:, : pos + 1].float(), values[:, : pos + 1].float())
        h = h + _project(attn.wo, out.view(1, n_heads * head_dim).type_as(h))
        x = reference.rms_norm(h, layer.ffn_norm.weight, layer.ffn_norm.eps)
        gate, up = _projections(ff.fused_gate_up, (ff.w1, ff.w3), x)
        h = h + _project(ff.w2, reference.silu_mul(gate, up))
    cache.tokens.append(token)
    h = reference.rms_norm(h, model.norm.weight, model.norm.eps)
    return _project(model.output, h)[0].float()
