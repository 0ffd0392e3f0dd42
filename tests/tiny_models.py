"""Small real models for tests and benchmarks: random weights, a real sentencepiece tokenizer with the infilling pieces.

Not used at run time. The tokenizer is trained in about a second on a few standard-library files, so
tests exercise the same code paths as a downloaded Code Llama, only smaller.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import sentencepiece as spm
import torch

from engine.checkpoints import save_hf_checkpoint, save_meta_checkpoint
from engine.config import ModelArgs
from engine.model import Transformer, init_weights
from engine.tokenizer import INFILL_PIECES

_TRAINING_MODULES = ("textwrap.py", "string.py", "json/encoder.py", "json/decoder.py", "heapq.py", "bisect.py")


def sample_code() -> list[str]:
    """Lines of real Python from the running interpreter's standard library."""
    stdlib = Path(os.__file__).parent
    lines: list[str] = []
    for name in _TRAINING_MODULES:
        lines += (stdlib / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def build_tokenizer(out_path: str | Path, vocab_size: int = 512, infill: bool = True) -> Path:
    """Train a small BPE tokenizer shaped like Code Llama's (byte fallback, BOS=1, EOS=2, infill pieces)."""
    out_path = Path(out_path)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_code()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",  # keep newlines and tabs as they are (Llama does)
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=list(INFILL_PIECES) if infill else [],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    out_path.write_bytes(model.getvalue())
    return out_path


def tiny_args(vocab_size: int = 512, **shape) -> ModelArgs:
    defaults = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, rope_theta=1e6, max_seq_len=2048)
    defaults.update(shape)
    return ModelArgs(vocab_size=vocab_size, **defaults)  # type: ignore[arg-type]


def random_model(args: ModelArgs, seed: int = 0) -> Transformer:
    model = Transformer(args)
    # A larger init than training uses, so that logits differ clearly between tokens (greedy
    # decoding on a near-uniform distribution would make token-for-token tests flaky).
    init_weights(model, std=0.2, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model.eval()


def build_tiny_model(
    out_dir: str | Path, layout: str = "hf", seed: int = 0, n_shards: int = 1, infill: bool = True, **shape
) -> Path:
    """Write a random-weight model directory in the Hugging Face or Meta layout (float32)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = build_tokenizer(out_dir / "tokenizer.model", infill=infill)
    vocab = spm.SentencePieceProcessor(model_file=str(tok_path)).get_piece_size()
    model = random_model(tiny_args(vocab_size=vocab, **shape), seed=seed)
    if layout == "hf":
        save_hf_checkpoint(model, tok_path, out_dir, dtype=torch.float32)
    elif layout == "meta":
        save_meta_checkpoint(model, tok_path, out_dir, n_shards=n_shards, dtype=torch.float32)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return out_dir


def build_adapter(model_dir: Path, out: Path, seed: int, scale: float, rope_theta: float) -> Path:
    """A rank-4 LoRA adapter for the model whose update is not zero (LoRA's B starts at zero), so
    tests see it change the output; saved as trained at `rope_theta`."""
    from engine.checkpoints import load_model
    from engine.train.lora import LoRAConfig, add_lora, save_adapter

    loaded = load_model(model_dir, dtype=torch.float32)
    cfg = LoRAConfig(rank=4, alpha=8.0)
    add_lora(loaded.model, cfg, seed=seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return save_adapter(loaded.model, out, cfg, {"rope_theta": rope_theta})
