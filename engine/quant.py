"""Weight-only quantization: int8 per output channel and int4 group-wise, for every linear layer.

The format (in memory, and as saved by `python -m engine quantize`; one per QuantizedLinear):

  int8  `qweight` int8  [out, in]        q = round(w / scale), q in [-127, 127]
        `scales`  bf16  [out]            scale = max|w| of the row / 127
        w ~= qweight * scales[:, None]
  int4  `qweight` uint8 [out, in/2]      q = round(w / scale) clamped to [-8, 7], stored as q + 8:
                                         two per byte along the input dim, the low nibble the even column
        `scales`  bf16  [out, ceil(in/group)]   scale = -(the group's weight of largest magnitude) / 8,
                                         signed, so that weight is exactly -8 and all 16 levels are used
                                         (llama.cpp's Q4_0 rule: 22 % less squared error on the default
                                         model than max|w| / 7, perplexity +2.8 % against +3.9 %);
                                         the last group of a row is shorter when `group` does not
                                         divide `in`
        w[o, i] ~= (nibble(o, i) - 8) * scales[o, i // group]

Scales are bf16. Measured on the default model (benchmarks/quant_quality.py, in a float32 model),
fp32 int8 scales give the same perplexity (+0.09 % against +0.10 %) and a few more greedy completions
identical to the unquantized model's (88 % against 78 % of 40); but the CPU kernels take the scales in
the activations' dtype, bf16, so fp32 ones would be rounded at run time anyway.

Group size 32 is the default: it is llama.cpp's Q4_0 block, and the largest power of two that divides
the default model's widths (320, 864); 128 halves the scales' bytes and costs quality (+3.7 % against
+2.8 % perplexity).

What is quantized: every nn.Linear of the blocks and the output head; with int4 the output head is
int8 (as llama.cpp keeps it above 4 bits): measured on the default model, int4's perplexity increase
is +2.8 % with it and +3.7 % with an int4 head (benchmarks/RESULTS.md). The embedding stays in the
model's dtype: a lookup reads only the prompt's rows, so quantizing it would save memory, not time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from engine.kernels.quant_cpu import CpuInt4

BITS = (8, 4)
DEFAULT_GROUP_SIZE = 32
MODES = {"none": None, "int8": 8, "int4": 4}


class QuantizationError(ValueError):
    """A quantization that cannot be built or loaded; the message names the tensor."""


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int = DEFAULT_GROUP_SIZE  # int4 only

    def __post_init__(self) -> None:
        if self.bits == 8:  # per channel: no groups, so every int8 spec is the same one
            object.__setattr__(self, "group_size", DEFAULT_GROUP_SIZE)
        if self.bits not in BITS:
            raise QuantizationError(f"bits must be 8 or 4, not {self.bits}")
        if self.bits == 4 and not (self.group_size >= 2 and self.group_size % 2 == 0):
            raise QuantizationError(f"group size must be an even number, not {self.group_size}")

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def to_config(self) -> dict:
        """The `quantization` entry of a quantized checkpoint's config.json."""
        out: dict = {"bits": self.bits, "format": "codellama-local"}
        if self.bits == 4:
            out["group_size"] = self.group_size
            out["output_head_bits"] = 8
        return out

    @classmethod
    def from_config(cls, raw: dict) -> QuantSpec:
        try:
            spec = cls(int(raw["bits"]), int(raw.get("group_size", DEFAULT_GROUP_SIZE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise QuantizationError(f"unreadable quantization entry {raw!r} ({exc})") from exc
        if int(raw.get("output_head_bits", 8)) != layer_spec(OUTPUT_HEAD, spec).bits:
            raise QuantizationError(f"output_head_bits {raw['output_head_bits']} is not supported")
        return spec


OUTPUT_HEAD = "output"  # the model's output projection (engine/model.py)


def layer_spec(name: str, spec: QuantSpec) -> QuantSpec:
    """The quantization of the linear layer `name` when the model is quantized with `spec`: the
    output head stays int8 under int4 (see the module's docstring)."""
    return QuantSpec(8) if name == OUTPUT_HEAD and spec.bits == 4 else spec


def spec_for_mode(mode: str | None, group_size: int = DEFAULT_GROUP_SIZE) -> QuantSpec | None:
    """'none' | 'int8' | 'int4' (the CLI's and the server's spelling) -> a spec, None for 'none'."""
    key = (mode or "none").lower()
    if key not in MODES:
        raise QuantizationError(f"unknown quantization {mode!r} (use none, int8 or int4)")
    bits = MODES[key]
    return None if bits is None else QuantSpec(bits, group_size)


# ---- quantize / dequantize (pure functions; the reference every kernel is tested against) ------


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] -> (qweight int8 [out, in], scales bf16 [out])."""
    w32 = w.float()
    scales = (w32.abs().amax(dim=1) / 127).clamp(min=1e-10).to(torch.bfloat16)
    q = torch.round(w32 / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(qweight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (qweight.float() * scales.float()[:, None]).to(dtype)


def _groups(w32: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out, n_groups, group_size], the last group padded with zeros."""
    out_f, in_f = w32.shape
    n_groups = math.ceil(in_f / group_size)
    return F.pad(w32, (0, n_groups * group_size - in_f)).view(out_f, n_groups, group_size)


def pack_int4(nibbles: torch.Tensor) -> torch.Tensor:
    """uint8 values 0..15 [out, in] (in even) -> [out, in/2], the low nibble the even column."""
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_int4: [out, in/2] -> uint8 values 0..15 [out, in]."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).view(packed.shape[0], -1)


def quantize_int4(w: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] (in even) -> (qweight uint8 [out, in/2], scales bf16 [out, ceil(in/group)])."""
    out_f, in_f = w.shape
    if in_f % 2:
        raise QuantizationError(f"int4 needs an even input width, not {in_f}")
    groups = _groups(w.float(), group_size)
    largest = torch.gather(groups, 2, groups.abs().argmax(dim=2, keepdim=True)).squeeze(2)
    scales = (largest / -8).to(torch.bfloat16)
    scales = torch.where(scales == 0, torch.full_like(scales, 1e-10), scales)  # an all-zero group
    q = torch.round(groups / scales.float()[..., None]).clamp(-8, 7)
    nibbles = (q + 8).to(torch.uint8).view(out_f, -1)[:, :in_f]
    return pack_int4(nibbles), scales


def dequantize_int4(
    qweight: torch.Tensor, scales: torch.Tensor, group_size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    nibbles = unpack_int4(qweight)
    out_f, in_f = nibbles.shape
    n_groups = scales.shape[1]
    q = F.pad(nibbles, (0, n_groups * group_size - in_f), value=8).to(dtype) - 8  # exact in bf16
    w = q.view(out_f, n_groups, group_size) * scales.to(dtype)[..., None]
    return w.view(out_f, -1)[:, :in_f]


def quantize_weight(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_int8(w) if spec.bits == 8 else quantize_int4(w, spec.group_size)


def expected_shapes(out_f: int, in_f: int, spec: QuantSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The shape and dtype of each tensor of a quantized [out_f, in_f] weight."""
    if spec.bits == 8:
        return {"qweight": ((out_f, in_f), torch.int8), "scales": ((out_f,), torch.bfloat16)}
    n_groups = math.ceil(in_f / spec.group_size)
    return {"qweight": ((out_f, in_f // 2), torch.uint8), "scales": ((out_f, n_groups), torch.bfloat16)}


# ---- the module ---------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """A bias-free nn.Linear with quantized weights. `forward` picks the kernel for the device:
    Triton on CUDA (engine/kernels/quant_triton.py), the fastest measured PyTorch op on CPU
    (benchmarks/quant_matmul.py). An optional low-rank update (a LoRA adapter) is added on top."""

    def __init__(self, in_features: int, out_features: int, spec: QuantSpec, device: torch.device | str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        for name, (shape, dtype) in expected_shapes(out_features, in_features, spec).items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device))
        self.lora: tuple[torch.Tensor, torch.Tensor, float] | None = None  # (A [r, in], B [out, r], scale)
        self._cpu: CpuInt4 | None = None  # int4 on CPU: the kernel's layout, then the only copy

    @classmethod
    def from_weight(cls, weight: torch.Tensor, spec: QuantSpec) -> QuantizedLinear:
        out_f, in_f = weight.shape
        q = cls(in_f, out_f, spec, device="meta")
        q.qweight, q.scales = q.quantize(weight)
        return q

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(qweight, scales) of a weight of this layer's shape, in this layer's format."""
        return quantize_weight(weight, self.spec)

    def extra_repr(self) -> str:
        group = f", group_size={self.spec.group_size}" if self.spec.bits == 4 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.spec.bits}{group}"

    def canonical(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(qweight, scales) in the format above, wherever the layer keeps its weight."""
        return self._cpu.canonical() if self._cpu is not None else (self.qweight, self.scales)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        qweight, scales = self.canonical()
        if self.spec.bits == 8:
            return dequantize_int8(qweight, scales, dtype)
        return dequantize_int4(qweight, scales, self.spec.group_size, dtype)

    def cpu_int4(self, dtype: torch.dtype) -> CpuInt4:
        """The int4 weight in the CPU kernel's layout (engine/kernels/quant_cpu.py), built at first
        use. It then replaces the canonical tensors, which are rebuilt from it where needed (saving,
        a move to another device), so int4 on CPU holds half a byte per weight, not one."""
        if self._cpu is None or self._cpu.scales_and_zeros.dtype != dtype:
            from engine.kernels.quant_cpu import CpuInt4

            qweight, scales = self.canonical()
            self._cpu = CpuInt4.from_canonical(qweight, scales, self.spec.group_size, dtype)
            self.qweight = torch.empty(0, dtype=torch.uint8)
            self.scales = torch.empty(0, dtype=torch.bfloat16)
        return self._cpu

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        if self._cpu is not None:  # a move or cast starts again from the canonical tensors
            self.qweight, self.scales = self._cpu.canonical()
            self._cpu = None
        return super()._apply(fn, recurse)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001 - nn.Module's signature
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._cpu is not None:
            destination[prefix + "qweight"], destination[prefix + "scales"] = self._cpu.canonical()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._matmul(x)
        if self.lora is not None:
            a, b, scale = self.lora
            y = y + (x @ a.t().to(x.dtype)) @ b.t().to(x.dtype) * scale
        return y

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        from engine import kernels

        return kernels.quantized_matmul(self, x)


def quantize_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by a QuantizedLinear of its weight."""
    return _swap_linears(model, spec, lambda lin, s: QuantizedLinear.from_weight(lin.weight.detach(), s))


def replace_linears(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replace every nn.Linear by an empty QuantizedLinear on the meta device (the loader fills it)."""
    return _swap_linears(model, spec, lambda lin, s: QuantizedLinear(lin.in_features, lin.out_features, s, "meta"))


def _swap_linears(
    module: nn.Module, spec: QuantSpec, make: Callable[[nn.Linear, QuantSpec], QuantizedLinear], prefix: str = ""
) -> nn.Module:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and child.bias is None:
            setattr(module, name, make(child, layer_spec(prefix + name, spec)))
        else:
            _swap_linears(child, spec, make, f"{prefix}{name}.")
    return module


def is_quantized_tensor(name: str) -> bool:
    """Whether a state-dict name is a QuantizedLinear's tensor (kept in its own dtype when saved)."""
    return name.endswith((".qweight", ".scales"))


def quantized_module_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
