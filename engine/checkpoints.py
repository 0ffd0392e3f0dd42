"""Load and save the two checkpoint layouts users download: Meta's and Hugging Face's.

Both are loaded tensor by tensor from memory-mapped files straight into a model built on the `meta`
device, converted to the target dtype and device on the way, so no second full copy of the weights
is ever held in host memory. A loaded model never keeps the files mapped: it survives them being
deleted, truncated or rewritten while it serves. Renames and the q/k row permutation between layouts
live here only.

Quantization (engine/quant.py) happens here too, tensor by tensor: a linear weight is quantized on
the target device as it is read, so a quantized model never holds its bf16 weights in full. A
directory written by `python -m engine quantize` (config.json's "quantization" entry) loads straight
into its quantized form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.atomic import atomic_directory
from engine.config import ModelArgs
from engine.model import Transformer
from engine.quant import QuantizationError, QuantizedLinear, QuantSpec, is_quantized_tensor, replace_linears
from engine.tokenizer import Tokenizer, TokenizerError


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message names the file and the problem."""


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    args: ModelArgs
    path: Path
    layout: str  # "meta" or "hf"
    quantization: QuantSpec | None = None  # the weights' quantization; None: the model's dtype


def detect_layout(model_dir: Path) -> str:
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: model directory not found")
    if (model_dir / "params.json").is_file() and list(model_dir.glob("consolidated.*.pth")):
        return "meta"
    if (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors")):
        return "hf"
    raise CheckpointError(
        f"{model_dir}: not a model directory (expected params.json + consolidated.*.pth, "
        "or config.json + *.safetensors, each with tokenizer.model)"
    )


def read_args(model_dir: str | Path) -> tuple[ModelArgs, str]:
    """The model's shape and layout, without touching the weights."""
    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    name = "params.json" if layout == "meta" else "config.json"
    try:
        raw = json.loads((model_dir / name).read_text())
        args = ModelArgs.from_meta_params(raw) if layout == "meta" else ModelArgs.from_hf_config(raw)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{model_dir / name}: cannot read the model configuration ({exc})") from exc
    return args, layout


def stored_quantization(model_dir: str | Path) -> QuantSpec | None:
    """The quantization a checkpoint was saved with (config.json's "quantization"), None when none."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    try:
        raw = json.loads(config.read_text()).get("quantization")
        return None if raw is None else QuantSpec.from_config(raw)
    except (OSError, json.JSONDecodeError, AttributeError, QuantizationError) as exc:
        raise CheckpointError(f"{config}: unreadable quantization entry ({exc})") from exc


def load_model(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    quantization: QuantSpec | None = None,
) -> LoadedModel:
    """Load a checkpoint; with `quantization`, every linear layer is quantized as it is read. A
    quantized checkpoint loads in the quantization it was saved with (asking for another is an error)."""
    model_dir = Path(model_dir)
    args, layout = read_args(model_dir)
    tok_path = model_dir / "tokenizer.model"
    if not tok_path.is_file():
        raise CheckpointError(f"{tok_path}: tokenizer.model is missing")
    try:
        tokenizer = Tokenizer(tok_path)
    except TokenizerError as exc:
        raise CheckpointError(str(exc)) from exc

    stored = stored_quantization(model_dir) if layout == "hf" else None
    if stored is not None and quantization is not None and quantization != stored:
        raise CheckpointError(
            f"{model_dir}: the checkpoint is quantized to {stored.name}"
            f"{f' (group size {stored.group_size})' if stored.bits == 4 else ''}; it cannot be loaded as "
            f"{quantization.name}{f' (group size {quantization.group_size})' if quantization.bits == 4 else ''}"
            " (quantize the original checkpoint instead)")
    spec = stored or quantization
    tensors = _meta_tensors(model_dir, args) if layout == "meta" else _hf_tensors(model_dir)
    if args.vocab_size <= 0:  # Meta params.json may say -1: the embedding decides
        args.vocab_size = _peek_vocab(model_dir, layout)
    _check_tokenizer(tokenizer, args, tok_path)

    with torch.device("meta"):
        model = Transformer(args)
        if spec is not None:
            replace_linears(model, spec)
    expected = {name: (p.shape, p.dtype) for name, p in model.state_dict().items()}
    quantize_on_load = {f"{n}.weight": m for n, m in model.named_modules()
                        if isinstance(m, QuantizedLinear)} if stored is None else {}
    state: dict[str, torch.Tensor] = {}
    for name, source, tensor in tensors:
        if name in quantize_on_load:
            layer = quantize_on_load[name]
            _check_shape(source, name, tensor, (layer.out_features, layer.in_features))
            prefix = name.removesuffix("weight")
            state[prefix + "qweight"], state[prefix + "scales"] = layer.quantize(tensor.to(device))
            continue
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {name!r}")
        shape, want_dtype = expected[name]
        _check_shape(source, name, tensor, tuple(shape))
        if is_quantized_tensor(name):
            if tensor.dtype != want_dtype:
                raise CheckpointError(f"{source}: quantized tensor {name!r} is {tensor.dtype}, "
                                      f"its format needs {want_dtype}")
            converted = tensor.to(device=device)
        else:
            converted = tensor.to(device=device, dtype=dtype)
        if converted.data_ptr() == tensor.data_ptr():
            # Still the memory-mapped file: a model served from it would die (SIGBUS) the moment the
            # file is truncated or rewritten in place. One tensor at a time, so no second full copy.
            converted = converted.clone()
        state[name] = converted
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        hint = " (a quantized checkpoint holds qweight and scales for every linear layer)" if stored else ""
        raise CheckpointError(f"{model_dir}: missing tensors: {shown}{hint}")
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    if torch.device(device).type == "cpu":
        model.fuse_projections()
    return LoadedModel(model=model, tokenizer=tokenizer, args=args, path=model_dir, layout=layout,
                       quantization=spec)


def _check_shape(source: Path, name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise CheckpointError(
            f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, the configuration needs {tuple(shape)}"
        )


def _check_tokenizer(tok: Tokenizer, args: ModelArgs, path: Path) -> None:
    # Checkpoints may pad the embedding to a round size; they never have fewer rows than pieces.
    padded_ok = tok.vocab_size <= args.vocab_size < tok.vocab_size + 128
    if not padded_ok:
        raise CheckpointError(
            f"{path}: tokenizer has {tok.vocab_size} pieces but the model's embedding has "
            f"{args.vocab_size} rows; this tokenizer does not belong to this model"
        )


# ---- Hugging Face layout ----------------------------------------------------------------------

# Whole-model tensors, then per-layer module names: (Hugging Face name, our name).
_HF_GLOBAL = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
_OURS_GLOBAL = {v: k for k, v in _HF_GLOBAL.items()}
_OURS_LAYER = {v: k for k, v in _HF_LAYER.items()}
_HF_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


# A linear layer's tensors: its weight, or (quantized) its qweight and scales.
_SUFFIX = re.compile(r"\.(weight|qweight|scales)$")


def hf_to_ours(name: str) -> str | None:
    return _rename(name, _HF_GLOBAL, "model.layers.", _HF_LAYER, "layers.")


def ours_to_hf(name: str) -> str:
    hf = _rename(name, _OURS_GLOBAL, "layers.", _OURS_LAYER, "model.layers.")
    if hf is None:
        raise KeyError(f"no Hugging Face name for {name!r}")
    return hf


def _rename(name: str, global_names: dict[str, str], layers_from: str, layer_names: dict[str, str],
            layers_to: str) -> str | None:
    """A tensor's name in the other layout (one direction's tables), None when it has none."""
    base, suffix = _split_suffix(name)
    if base + ".weight" in global_names:
        return global_names[base + ".weight"].removesuffix(".weight") + suffix
    m = re.fullmatch(re.escape(layers_from) + r"(\d+)\.(.+)", base)
    if m and m.group(2) in layer_names:
        return f"{layers_to}{m.group(1)}.{layer_names[m.group(2)]}{suffix}"
    return None


def _split_suffix(name: str) -> tuple[str, str]:
    m = _SUFFIX.search(name)
    return (name[: m.start()], m.group(0)) if m else (name, "")


def _hf_shard_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: unreadable safetensors index ({exc})") from exc
        files = sorted({model_dir / f for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: shard listed in {index.name} is missing")
        return files
    return sorted(model_dir.glob("*.safetensors"))


def _hf_tensors(model_dir: Path) -> Iterator[tuple[str, Path, torch.Tensor]]:
    for path in _hf_shard_files(model_dir):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if _HF_IGNORED.search(key):
                        continue
                    name = hf_to_ours(key)
                    if name is None:
                        raise CheckpointError(f"{path}: unexpected tensor {key!r}")
                    yield name, path, f.get_tensor(key)
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from exc


# ---- Meta layout ------------------------------------------------------------------------------

# Model-parallel shards split these weights along dim 0 (column-parallel) ...
_META_CAT_DIM0 = ("wq", "wk", "wv", "w1", "w3", "output")
# ... and these along dim 1 (row-parallel); everything else (norms) is replicated.
_META_CAT_DIM1 = ("wo", "w2", "tok_embeddings")
_META_IGNORED = ("rope.freqs",)


def meta_concat_dim(name: str) -> int | None:
    parts = name.split(".")
    if any(p in _META_CAT_DIM0 for p in parts):
        return 0
    if any(p in _META_CAT_DIM1 for p in parts):
        return 1
    return None


def _meta_shard_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("consolidated.*.pth"))
    numbers = []
    for f in files:
        m = re.fullmatch(r"consolidated\.(\d+)\.pth", f.name)
        if not m:
            raise CheckpointError(f"{f}: unexpected shard name")
        numbers.append(int(m.group(1)))
    for expected_n in range(max(numbers) + 1):
        if expected_n not in numbers:
            raise CheckpointError(f"{model_dir / f'consolidated.{expected_n:02d}.pth'}: shard is missing")
    return files


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({exc})") from exc


def _meta_tensors(model_dir: Path, args: ModelArgs) -> Iterator[tuple[str, Path, torch.Tensor]]:
    files = _meta_shard_files(model_dir)
    shards = [_torch_load(f) for f in files]  # memory-mapped: nothing is read yet
    names = list(shards[0].keys())
    for f, shard in zip(files[1:], shards[1:], strict=True):
        if list(shard.keys()) != names:
            raise CheckpointError(f"{f}: holds different tensors than {files[0].name}")
    source = files[0] if len(files) == 1 else model_dir
    for name in names:
        if name in _META_IGNORED:
            continue
        dim = meta_concat_dim(name)
        pieces = [s[name] for s in shards]
        tensor = pieces[0] if dim is None or len(pieces) == 1 else torch.cat(pieces, dim=dim)
        if name.endswith("attention.wq.weight"):
            tensor = interleaved_to_half(tensor, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            assert args.n_kv_heads is not None
            tensor = interleaved_to_half(tensor, args.n_kv_heads)
        yield name, source, tensor


def _peek_vocab(model_dir: Path, layout: str) -> int:
    if layout == "meta":
        shards = [_torch_load(f) for f in _meta_shard_files(model_dir)]
        return int(shards[0]["output.weight"].shape[0]) * len(shards)
    for name, _, tensor in _hf_tensors(model_dir):
        if name == "output.weight":
            return int(tensor.shape[0])
    raise CheckpointError(f"{model_dir}: no output weight found")


def interleaved_to_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a Meta wq/wk so that rotary pair (2i, 2i+1) becomes (i, i + d_head/2)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `interleaved_to_half`: back to Meta's interleaved rotary row order."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


# ---- saving -----------------------------------------------------------------------------------


def _check_replaceable(out: Path) -> None:
    """A save replaces the whole directory: never one that holds something other than a model."""
    model_files = ("config.json", "params.json", "tokenizer.model")
    if out.is_dir() and any(out.iterdir()) and not any((out / n).is_file() for n in model_files):
        raise CheckpointError(f"{out}: exists and holds no model; save to a new or empty directory")


def _write_extra_files(out_dir: Path, tokenizer_model: Path, extra_files: Mapping[str, str] | None) -> None:
    (out_dir / "tokenizer.model").write_bytes(Path(tokenizer_model).read_bytes())
    for name, text in (extra_files or {}).items():
        (out_dir / name).write_text(text)


def save_hf_checkpoint(
    model: Transformer, tokenizer_model: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.bfloat16,
    config_extra: Mapping[str, Any] | None = None, extra_files: Mapping[str, str] | None = None,
) -> Path:
    """config.json + model.safetensors + tokenizer.model, loadable by us and by transformers.

    `config_extra` adds keys to config.json; `extra_files` ({name: text}) are written beside. The
    directory appears complete or not at all (engine/atomic.py): a failed save leaves the previous one."""
    out = Path(out_dir)
    _check_replaceable(out)
    # Quantized tensors keep their own dtypes (int8/uint8 weights, bf16 scales).
    state = {ours_to_hf(k): _own_memory(v.detach().to("cpu", v.dtype if is_quantized_tensor(k) else dtype))
             for k, v in model.state_dict().items()}
    dtype_name = str(dtype).removeprefix("torch.")
    config = {**model.args.to_hf_config(dtype_name), **(config_extra or {})}
    with atomic_directory(out) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        _write_extra_files(tmp, Path(tokenizer_model), extra_files)
    return out


def _own_memory(t: torch.Tensor) -> torch.Tensor:
    """t, copied when it is a view of a larger tensor (a fused projection's rows, engine/fused.py):
    safetensors refuses tensors that share memory."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.nbytes:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def save_meta_checkpoint(
    model: Transformer,
    tokenizer_model: str | Path,
    out_dir: str | Path,
    n_shards: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """params.json + consolidated.NN.pth (model-parallel shards) + tokenizer.model, as Meta ships them;
    written as one directory that appears complete or not at all, like save_hf_checkpoint."""
    out = Path(out_dir)
    _check_replaceable(out)
    args = model.args
    assert args.n_kv_heads is not None
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n_shards)]
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu", dtype)
        if name.endswith("attention.wq.weight"):
            t = half_to_interleaved(t, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            t = half_to_interleaved(t, args.n_kv_heads)
        dim = meta_concat_dim(name)
        for i in range(n_shards):
            shards[i][name] = (t if dim is None else t.chunk(n_shards, dim=dim)[i]).clone()
    with atomic_directory(out) as tmp:
        for i, shard in enumerate(shards):
            torch.save(shard, tmp / f"consolidated.{i:02d}.pth")
        (tmp / "params.json").write_text(json.dumps(args.to_meta_params(), indent=2) + "\n")
        _write_extra_files(tmp, Path(tokenizer_model), extra_files)
    return out
