"""`python -m engine export`: a model (with a LoRA adapter merged in) for other serving engines.

- `--format hf`: config.json + model.safetensors + tokenizer.model, for vLLM, TGI and transformers.
- `--format gguf`: one .gguf file for llama.cpp (its server, llama-cpp-python, Ollama, LM Studio):
  llama architecture metadata, the sentencepiece vocabulary with Code Llama's infilling ids, and the
  weights in f32, f16 or bf16 (norms always f32), or with `--quant q8_0|q4_0` every matrix in
  llama.cpp's block formats: blocks of 32 weights along a row, each with an fp16 scale d; Q8_0 stores
  round(w / d) as int8 with d = absmax / 127, Q4_0 stores nibbles q + 8 with d = (the signed value of
  largest magnitude) / -8. The packing is gguf-py's (`gguf.quants.quantize`); on the default model
  every tensor is byte-identical to what llama.cpp's own `llama_model_quantize` writes from our f32
  export. As there, Q4_0 keeps the output head at 8 bits (Q8_0; llama-quantize picks Q6_K where the
  row length is a multiple of 256, else Q8_0): 4-bit logits cost the most quality for the fewest bytes.

Layout notes. Our checkpoints keep wq/wk rows in the "rotate half" order (as Hugging Face does); GGUF
wants Meta's interleaved order (llama.cpp applies rotary to adjacent pairs), so those two weights go
through `half_to_interleaved`, the same permutation llama.cpp's HF->GGUF converter applies. GGUF lists
dimensions innermost first; the writer reverses our (out, in) shapes itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from engine.atomic import atomic_file
from engine.checkpoints import (
    CheckpointError,
    LoadedModel,
    half_to_interleaved,
    load_model,
    save_hf_checkpoint,
)
from engine.model import Transformer
from engine.tokenizer import Tokenizer

QUANT_TYPES = ("q8_0", "q4_0")
GGUF_BLOCK = 32  # weights per Q8_0 / Q4_0 block (along a row)

DTYPES = {
    "float32": torch.float32, "f32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "f16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


# ---- loading ------------------------------------------------------------------------------------


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the checkpoint's weights are stored in (read from one tensor header, no weights)."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if shards:
        from safetensors import safe_open

        with safe_open(str(shards[0]), framework="pt") as f:
            names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
            first = next(iter(f.keys()))
            return names.get(f.get_slice(first).get_dtype(), torch.bfloat16)
    meta = sorted(model_dir.glob("consolidated.*.pth"))
    if meta:
        state = torch.load(meta[0], map_location="cpu", mmap=True, weights_only=True)
        return next(iter(state.values())).dtype
    return torch.bfloat16


def resolve_export_dtype(model_dir: Path, dtype: str) -> torch.dtype:
    if dtype == "auto":
        return stored_dtype(model_dir)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, float32, float16 or bfloat16)")
    return DTYPES[dtype]


def load_for_export(model_dir: str | Path, adapter: str | Path | None, dtype: torch.dtype) -> LoadedModel:
    """The model on the CPU in `dtype` (no float32 copy of a 7B model: it would not fit in 24 GB),
    with the adapter merged the way the engine applies it at load time (float32 arithmetic)."""
    loaded = load_model(model_dir, device="cpu", dtype=dtype)
    if adapter:
        from engine.train.lora import apply_adapter

        adapter = Path(adapter)
        if not (adapter / "adapter.json").is_file():
            raise CheckpointError(f"{adapter}: not an adapter directory (adapter.json is missing)")
        apply_adapter(loaded.model, adapter)  # also sets the rope base the adapter was trained with
    return loaded


# ---- Hugging Face -------------------------------------------------------------------------------


def export_hf(model_dir: str | Path, out_dir: str | Path, adapter: str | Path | None = None,
              dtype: str = "auto") -> Path:
    model_dir = Path(model_dir)
    target = resolve_export_dtype(model_dir, dtype)
    loaded = load_for_export(model_dir, adapter, target)
    return save_hf_checkpoint(loaded.model, loaded.tokenizer.path, out_dir, dtype=target)


# ---- GGUF ---------------------------------------------------------------------------------------

_LAYER_NAMES = {
    "attention_norm": "attn_norm",
    "attention.wq": "attn_q",
    "attention.wk": "attn_k",
    "attention.wv": "attn_v",
    "attention.wo": "attn_output",
    "ffn_norm": "ffn_norm",
    "feed_forward.w1": "ffn_gate",
    "feed_forward.w2": "ffn_down",
    "feed_forward.w3": "ffn_up",
}


def gguf_tensors(model: Transformer) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, tensor in GGUF row order) for every weight, in llama.cpp's usual order."""
    args = model.args
    assert args.n_kv_heads is not None
    yield "token_embd.weight", model.tok_embeddings.weight
    for i, layer in enumerate(model.layers):
        for ours, theirs in _LAYER_NAMES.items():
            w = layer.get_submodule(ours).weight
            assert isinstance(w, torch.Tensor)
            if ours == "attention.wq":
                w = half_to_interleaved(w, args.n_heads)
            elif ours == "attention.wk":
                w = half_to_interleaved(w, args.n_kv_heads)
            yield f"blk.{i}.{theirs}.weight", w
    yield "output_norm.weight", model.norm.weight
    yield "output.weight", model.output.weight


def gguf_vocab(tok: Tokenizer, n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and GGUF token types; padded with unused pieces up to the embedding's rows."""
    from gguf import TokenType
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tok.path.read_bytes())
    user_defined = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    infill = {tok.prefix_id, tok.suffix_id, tok.middle_id, tok.eot_id} - {None}
    pieces, scores, types = [], [], []
    sp = tok.sp
    for i in range(tok.vocab_size):
        pieces.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            kind = TokenType.UNKNOWN
        elif sp.is_control(i) or i in infill:
            # llama.cpp treats Code Llama's infilling pieces as control tokens (it retypes them itself
            # when they come in as user-defined, with a warning).
            kind = TokenType.CONTROL
        elif sp.is_unused(i):
            kind = TokenType.UNUSED
        elif sp.is_byte(i):
            kind = TokenType.BYTE
        elif proto.pieces[i].type == user_defined:
            kind = TokenType.USER_DEFINED
        else:
            kind = TokenType.NORMAL
        types.append(int(kind))
    for i in range(tok.vocab_size, n_vocab):
        pieces.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(int(TokenType.UNUSED))
    return pieces, scores, types


def write_gguf(model: Transformer, tok: Tokenizer, out_path: str | Path, dtype: torch.dtype,
               name: str = "codellama", quant: str | None = None) -> Path:
    """Write `model` and `tok` as one GGUF file (llama architecture). 2D weights in `dtype`
    (float32, float16 or bfloat16), or in `quant` ("q8_0" / "q4_0") where their rows are whole blocks
    of 32 (the others stay in `dtype`); 1D norms in float32. Tensors are converted one at a time."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"GGUF export supports float32, float16 and bfloat16, not {dtype}")
    if quant is not None and quant not in QUANT_TYPES:
        raise ValueError(f"unknown GGUF quantization {quant!r} (use {' or '.join(QUANT_TYPES)})")
    out_path = Path(out_path)
    with atomic_file(out_path) as tmp:  # a failed export never leaves a truncated .gguf behind
        _write_gguf_file(model, tok, tmp, dtype, name, quant)
    return out_path


def _write_gguf_file(
    model: Transformer, tok: Tokenizer, out_path: Path, dtype: torch.dtype, name: str, quant: str | None
) -> None:
    import gguf

    args = model.args
    assert args.n_kv_heads is not None and args.hidden_dim is not None
    writer = gguf.GGUFWriter(str(out_path), "llama")  # writes general.architecture itself
    file_type = {torch.float32: gguf.LlamaFileType.ALL_F32, torch.float16: gguf.LlamaFileType.MOSTLY_F16,
                 torch.bfloat16: gguf.LlamaFileType.MOSTLY_BF16}[dtype]
    qtype = None
    if quant is not None:
        qtype = gguf.GGMLQuantizationType[quant.upper()]
        file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]

    writer.add_name(name)
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(args.max_seq_len)
    writer.add_embedding_length(args.dim)
    writer.add_block_count(args.n_layers)
    writer.add_feed_forward_length(args.hidden_dim)
    writer.add_head_count(args.n_heads)
    writer.add_head_count_kv(args.n_kv_heads)
    writer.add_rope_dimension_count(args.head_dim)
    writer.add_rope_freq_base(float(args.rope_theta))
    writer.add_layer_norm_rms_eps(float(args.norm_eps))
    writer.add_vocab_size(args.vocab_size)

    pieces, scores, types = gguf_vocab(tok, args.vocab_size)
    writer.add_tokenizer_model("llama")  # sentencepiece, scored merges
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_unk_token_id(tok.sp.unk_id())
    if tok.pad_id >= 0:
        writer.add_pad_token_id(tok.pad_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tok.path.read_bytes())
    writer.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix))
    writer.add_remove_extra_whitespaces(bool(proto.normalizer_spec.remove_extra_whitespaces))
    keys = gguf.Keys.Tokenizer
    for key, token in ((keys.FIM_PRE_ID, tok.prefix_id), (keys.FIM_SUF_ID, tok.suffix_id),
                       (keys.FIM_MID_ID, tok.middle_id), (keys.EOT_ID, tok.eot_id)):
        if token is not None:
            writer.add_uint32(key, token)

    # Tensor infos first (the header lists them), then the data one tensor at a time.
    def target(t: torch.Tensor) -> torch.dtype:
        return torch.float32 if t.dim() == 1 else dtype

    def quantized(t: torch.Tensor) -> bool:
        return qtype is not None and t.dim() == 2 and t.shape[1] % GGUF_BLOCK == 0

    def block_type(tname: str):  # noqa: ANN202 - a GGMLQuantizationType
        return gguf.GGMLQuantizationType.Q8_0 if tname == "output.weight" else qtype

    raw_types = {torch.float32: gguf.GGMLQuantizationType.F32, torch.float16: gguf.GGMLQuantizationType.F16,
                 torch.bfloat16: gguf.GGMLQuantizationType.BF16}
    with torch.no_grad():
        for tname, t in gguf_tensors(model):
            if quantized(t):
                block_bytes = gguf.GGML_QUANT_SIZES[block_type(tname)][1]
                nbytes = t.numel() // GGUF_BLOCK * block_bytes
                writer.add_tensor_info(tname, tuple(t.shape), _numpy_dtype(torch.float32), nbytes,
                                       raw_dtype=block_type(tname))
            else:
                td = target(t)
                writer.add_tensor_info(tname, tuple(t.shape), _numpy_dtype(td), t.numel() * td.itemsize,
                                       raw_dtype=raw_types[td])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with torch.no_grad():
        for tname, t in gguf_tensors(model):
            if quantized(t):
                data = t.detach().to("cpu", torch.float32).numpy()
                writer.write_tensor_data(gguf.quants.quantize(data, block_type(tname)))
            else:
                writer.write_tensor_data(_to_numpy(t.detach().to("cpu", target(t)).contiguous()))
    writer.close()


def _numpy_dtype(dtype: torch.dtype):  # noqa: ANN202 - numpy dtype
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}[dtype]


def _to_numpy(t: torch.Tensor):  # noqa: ANN202 - numpy array
    # numpy has no bfloat16: its raw 16-bit patterns go out as int16 under the BF16 type code.
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def export_gguf(model_dir: str | Path, out_path: str | Path, adapter: str | Path | None = None,
                dtype: str = "auto", quant: str | None = None) -> Path:
    model_dir = Path(model_dir)
    target = resolve_export_dtype(model_dir, dtype)
    loaded = load_for_export(model_dir, adapter, target)
    out_path = Path(out_path)
    if out_path.is_dir():
        out_path = out_path / f"{model_dir.name}.gguf"
    name = model_dir.name + (f"+{Path(adapter).name}" if adapter else "")
    return write_gguf(loaded.model, loaded.tokenizer, out_path, target, name=name, quant=quant)


# ---- command line -------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from engine.paths import default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    if args.format == "gguf":
        try:
            import gguf  # noqa: F401
        except ImportError:
            print("error: GGUF export needs the gguf package: pip install 'codellama-local[export]'",
                  file=sys.stderr)
            return 2
        out = export_gguf(model_dir, args.out, args.adapter, args.dtype, args.quant)
    else:
        if args.quant:
            print("error: --quant applies to --format gguf only", file=sys.stderr)
            return 2
        out = export_hf(model_dir, args.out, args.adapter, args.dtype)
    print(json.dumps({"format": args.format, "out": str(out), "model": str(model_dir),
                      "adapter": args.adapter, "quant": args.quant}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the model (+ adapter merged) as GGUF or Hugging Face safetensors")
    p.add_argument("--model", help="model directory (default: the embedded default model)")
    p.add_argument("--adapter", help="LoRA adapter directory to merge into the weights")
    p.add_argument("--format", choices=("gguf", "hf"), required=True)
    p.add_argument("--out", required=True, help="output file (gguf) or directory (hf)")
    p.add_argument("--dtype", default="auto",
                   help="auto (as stored), float32, float16 or bfloat16; GGUF norms are float32 always")
    p.add_argument("--quant", choices=QUANT_TYPES, default=None,
                   help="GGUF only: every matrix in llama.cpp's Q8_0 or Q4_0 blocks (32 weights, fp16 scale)")
    p.set_defaults(func=cmd_export)
