"""LoRA adapters for the engine's Transformer: wrap, train, save, merge, and apply at load time.

An adapter directory holds `adapter.safetensors` (per target Linear: `<name>.lora_A` (r, in) and
`<name>.lora_B` (out, r); plus whole tensors for any embeddings/norms trained alongside, under their
model names) and `adapter.json` (rank, alpha, targets, base model, rope base, sequence length, data
hash). The engine calls `apply_adapter(model, adapter_dir)` to use one; `AppliedAdapter.remove()`
restores the base weights exactly, so adapters can be switched without reloading the model.

On a quantized model (engine/quant.py) the low-rank update cannot be merged into int8/int4 weights
without losing it to rounding, so each target QuantizedLinear adds it at run time instead
(`QuantizedLinear.lora`), as QLoRA does; whole tensors trained alongside a quantized layer's weight
(the output head with train_embeddings) are quantized into it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.atomic import atomic_file
from engine.model import Transformer
from engine.quant import QuantizedLinear

ATTENTION = ("wq", "wk", "wv", "wo")
MLP = ("w1", "w2", "w3")
DEFAULT_TARGETS = ATTENTION + MLP
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_META = "adapter.json"


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T B^T) * alpha / r, with the base frozen and B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, seed: int = 0) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        gen = torch.Generator().manual_seed(seed)
        a = torch.empty(rank, base.in_features)
        bound = 1 / math.sqrt(base.in_features)
        a.uniform_(-bound, bound, generator=gen)
        # Kept in float32 whatever the (frozen) base's dtype: the update is small and must not round away.
        self.lora_A = nn.Parameter(a.to(base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        base.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t().to(x.dtype)) @ self.lora_B.t().to(x.dtype) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_B.float() @ self.lora_A.float()) * self.scale


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    train_embeddings: bool = False  # LongLoRA trains embeddings and norms too for long context
    train_norms: bool = False
    meta: dict = field(default_factory=dict)


def add_lora(model: Transformer, cfg: LoRAConfig, seed: int = 0) -> dict[str, nn.Parameter]:
    """Freeze the model, wrap the target projections, and return the trainable parameters by name."""
    for p in model.parameters():
        p.requires_grad_(False)
    for i, layer in enumerate(model.layers):
        for owner in (layer.attention, layer.feed_forward):
            for name in cfg.targets:
                lin = getattr(owner, name, None)
                if isinstance(lin, nn.Linear):
                    setattr(owner, name, LoRALinear(lin, cfg.rank, cfg.alpha, seed=seed * 1000 + i))
    if cfg.train_embeddings:
        model.tok_embeddings.weight.requires_grad_(True)
        model.output.weight.requires_grad_(True)
    if cfg.train_norms:
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.requires_grad_(True)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _model_name(n: str) -> str:
    """Name of a parameter as in the unwrapped model (`...wq.base.weight` -> `...wq.weight`)."""
    return n.replace(".base.", ".")


def adapter_state(model: Transformer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        out[n if ".lora_" in n else _model_name(n)] = p.detach().to("cpu").contiguous()
    return out


def save_adapter(model: Transformer, out_dir: str | Path, cfg: LoRAConfig, meta: dict, strength: float = 1.0,
                 base: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the model's adapter. With `strength` below 1, the saved update is that fraction of the
    trained one (the low-rank products and, against `base`, the whole tensors trained alongside):
    the weights part of the way from the base model to the fine-tuned one, as WiSE-FT interpolates."""
    out = Path(out_dir)  # atomic_file creates it
    state = {k: v.float() for k, v in adapter_state(model).items()}
    info = {"rank": cfg.rank, "alpha": cfg.alpha, "targets": list(cfg.targets),
            "train_embeddings": cfg.train_embeddings, "train_norms": cfg.train_norms, **meta}
    if strength != 1.0:
        state, info["strength"] = _weakened(state, strength, base), strength
    # Both files are written in full before either replaces the previous adapter; adapter.json (what
    # loaders look for) is renamed last.
    with atomic_file(out / ADAPTER_META) as meta_tmp, atomic_file(out / ADAPTER_WEIGHTS) as weights_tmp:
        save_file(state, str(weights_tmp), metadata={"format": "pt"})
        meta_tmp.write_text(json.dumps(info, indent=1) + "\n")
    return out


def _weakened(state: dict[str, torch.Tensor], strength: float,
              base: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """`state` with `strength` of its update: each LoRA B scaled (so B A is), each whole tensor moved
    back toward its value in `base`."""
    out = {}
    for key, value in state.items():
        if key.endswith(".lora_B"):
            out[key] = value * strength
        elif key.endswith(".lora_A"):
            out[key] = value
        elif base is None or key not in base:
            raise ValueError(f"a weakened adapter needs the base model's {key}")
        else:
            start = base[key].float()
            out[key] = start + strength * (value - start)
    return out


def whole_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Copies of the tensors add_lora trains in full (embeddings, output, norms), by adapter name:
    the base a weakened adapter is measured from (save_adapter's `base`)."""
    return {k: v.detach().clone() for k, v in adapter_state(model).items() if ".lora_" not in k}


def merge_lora(model: Transformer) -> Transformer:
    """Fold every LoRALinear into its base Linear (in place) and unwrap it."""
    for layer in model.layers:
        for owner in (layer.attention, layer.feed_forward):
            for name, mod in list(owner.named_children()):
                if isinstance(mod, LoRALinear):
                    with torch.no_grad():
                        mod.base.weight += mod.delta().to(mod.base.weight.dtype)
                    setattr(owner, name, mod.base)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def read_adapter_meta(adapter_dir: str | Path) -> dict:
    return json.loads((Path(adapter_dir) / ADAPTER_META).read_text())


@dataclass
class AppliedAdapter:
    """An adapter merged into a model; `remove()` puts the base weights back bit for bit."""

    model: Transformer
    path: Path
    meta: dict
    originals: dict[str, torch.Tensor]
    original_rope_theta: float
    unmerged: list[QuantizedLinear] = field(default_factory=list)  # layers carrying the update at run time

    def remove(self) -> None:
        tensors = _tensors(self.model)
        with torch.no_grad():
            for n, t in self.originals.items():
                tensors[n].copy_(t)
        for layer in self.unmerged:
            layer.lora = None
        self.model.args.rope_theta = self.original_rope_theta


def _tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name (a quantized layer's weights are buffers)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def apply_adapter(model: Transformer, adapter_dir: str | Path) -> AppliedAdapter:
    """Merge the adapter in `adapter_dir` into `model`'s weights (in the model's dtype), and set the
    rope base the adapter was trained with. Returns a handle whose `remove()` undoes it exactly."""
    path = Path(adapter_dir)
    meta = read_adapter_meta(path)
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    params = _tensors(model)
    modules = dict(model.named_modules())
    scale = float(meta["alpha"]) / int(meta["rank"])
    originals: dict[str, torch.Tensor] = {}
    unmerged: list[QuantizedLinear] = []

    def replace(name: str, value: torch.Tensor) -> None:
        w = params[name]
        originals.setdefault(name, w.detach().clone())
        w.copy_(value.to(w.device, w.dtype))

    with torch.no_grad():
        for key, t in tensors.items():
            if key.endswith(".lora_A"):
                module_name = key[: -len(".lora_A")]
                b = tensors[module_name + ".lora_B"]
                layer = modules.get(module_name)
                if isinstance(layer, QuantizedLinear):
                    device = layer.qweight.device
                    layer.lora = (t.float().to(device), b.float().to(device), scale)
                    unmerged.append(layer)
                    continue
                w = params[module_name + ".weight"]
                delta = (b.float() @ t.float()) * scale
                replace(module_name + ".weight", w.float() + delta.to(w.device))
            elif key.endswith(".lora_B"):
                continue
            elif isinstance(layer := modules.get(key.removesuffix(".weight")), QuantizedLinear):
                qweight, scales = layer.quantize(t.to(layer.qweight.device))
                replace(key.removesuffix("weight") + "qweight", qweight)
                replace(key.removesuffix("weight") + "scales", scales)
            else:
                replace(key, t)
    handle = AppliedAdapter(model, path, meta, originals, model.args.rope_theta, unmerged)
    if "rope_theta" in meta:
        model.args.rope_theta = float(meta["rope_theta"])
    return handle
