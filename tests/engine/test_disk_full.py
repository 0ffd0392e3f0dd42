"""The disk fills up while an adapter, a training checkpoint, an export or a token cache is written:
the previous good one stays in place and loads, and no half-written file is left where a later load
would find it (engine/atomic.py).

A full disk is simulated by the real writer writing its file, then the file being cut to half its
size and ENOSPC raised: what a write that runs out of space midway leaves behind.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoints import load_model, save_hf_checkpoint, save_meta_checkpoint
from engine.train.lora import LoRAConfig, add_lora, apply_adapter, save_adapter


def disk_full_midway(write: Callable[..., object], path_arg: int = 1) -> Callable[..., object]:
    """`write` (which takes its output path as positional argument `path_arg`) that runs out of
    space halfway through its file."""

    def failing(*args: object, **kwargs: object) -> object:
        write(*args, **kwargs)
        path = Path(str(args[path_arg]))
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size // 2)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    return failing


def leftovers(directory: Path) -> list[str]:
    """Temporary files or directories a failed write left behind."""
    return sorted(p.name for p in directory.rglob("*") if "tmp" in p.name)


def fresh_model(model_dir: Path):
    return load_model(model_dir, dtype=torch.float32)


def changed(model) -> None:  # noqa: ANN001 - a Transformer
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)


def test_adapter_written_on_a_full_disk_leaves_the_previous_adapter(tiny_model_dir, tmp_path, monkeypatch):
    import engine.train.lora as lora

    x = torch.tensor([[1, 5, 9, 20]])
    model = fresh_model(tiny_model_dir).model
    cfg = LoRAConfig(rank=2, alpha=4)
    trainable = add_lora(model, cfg)
    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.01)
    out = tmp_path / "adapter"
    save_adapter(model, out, cfg, {"steps": 1})
    base = fresh_model(tiny_model_dir).model.eval()
    with torch.no_grad():
        apply_adapter(base, out).remove()
        handle = apply_adapter(base, out)
        good = base(x)
        handle.remove()

    with torch.no_grad():
        for p in trainable.values():
            p.add_(0.05)
    monkeypatch.setattr(lora, "save_file", disk_full_midway(lora.save_file))
    with pytest.raises(OSError) as failed:
        save_adapter(model, out, cfg, {"steps": 2})
    assert failed.value.errno == errno.ENOSPC
    assert json.loads((out / "adapter.json").read_text())["steps"] == 1  # the previous one, whole
    with torch.no_grad():
        apply_adapter(base, out)
        torch.testing.assert_close(base(x), good, rtol=0, atol=0)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("layout", ["hf", "meta"])
def test_model_saved_on_a_full_disk_leaves_the_previous_model(tiny_model_dir, tmp_path, monkeypatch, layout):
    import engine.checkpoints as checkpoints

    loaded = fresh_model(tiny_model_dir)
    out = tmp_path / "export"
    save = save_hf_checkpoint if layout == "hf" else save_meta_checkpoint
    save(loaded.model, loaded.tokenizer.path, out, dtype=torch.float32)
    x = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        good = load_model(out, dtype=torch.float32).model(x)

    changed(loaded.model)
    if layout == "hf":
        monkeypatch.setattr(checkpoints, "save_file", disk_full_midway(checkpoints.save_file))
    else:
        monkeypatch.setattr(torch, "save", disk_full_midway(torch.save))
    with pytest.raises(OSError):
        save(loaded.model, loaded.tokenizer.path, out, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(load_model(out, dtype=torch.float32).model(x), good)
    assert leftovers(tmp_path) == []


def test_gguf_export_on_a_full_disk_leaves_no_truncated_file(tiny_model_dir, tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    from engine.export import export_gguf

    out = tmp_path / "tiny.gguf"
    export_gguf(tiny_model_dir, out, dtype="float32")
    good = out.read_bytes()
    real_write = gguf.GGUFWriter.write_tensor_data
    written = []

    def write_then_fill(self, tensor, *args, **kwargs):  # noqa: ANN001, ANN202 - gguf's signature
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(1)
        return real_write(self, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", write_then_fill)
    with pytest.raises(OSError):
        export_gguf(tiny_model_dir, out, dtype="float16")
    assert out.read_bytes() == good
    assert len(gguf.GGUFReader(out).tensors) > 0
    assert leftovers(tmp_path) == []
    with pytest.raises(OSError):  # no previous export: none appears
        export_gguf(tiny_model_dir, tmp_path / "new.gguf", dtype="float16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


def test_training_checkpoint_on_a_full_disk_resumes_from_the_previous_one(tiny_model_dir, tmp_path, monkeypatch):
    from engine.train.data import WindowSampler
    from engine.train.trainer import TrainConfig, latest_checkpoint, save_checkpoint, train

    stream = np.arange(2000, dtype=np.int32) % 200
    cfg = TrainConfig(steps=2, seq_len=16, dtype="fp32", checkpoint_every_s=1e9, log_every=1)
    model = fresh_model(tiny_model_dir).model
    train(model, WindowSampler(stream, 16, 1, 0), cfg, tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run").name == "step-0000002"

    opt = torch.optim.AdamW(model.parameters())
    monkeypatch.setattr(torch, "save", disk_full_midway(torch.save))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "run", 3, model, opt, dict(model.named_parameters()), cfg, keep=2)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-0000002"]
    assert leftovers(tmp_path) == []
    resumed = fresh_model(tiny_model_dir).model
    cfg.steps = 3
    train(resumed, WindowSampler(stream, 16, 1, 0), cfg, tmp_path / "run", resume=True)
    assert latest_checkpoint(tmp_path / "run").name == "step-0000003"


class FillingStream(np.ndarray):
    """A token array whose `tofile` runs out of space halfway."""

    def tofile(self, path, *args, **kwargs) -> None:  # noqa: ANN001 - numpy's signature
        disk_full_midway(lambda a, p: np.asarray(a).tofile(p))(self, path)


def test_token_cache_on_a_full_disk_is_rebuilt_not_read_half(tmp_path):
    from engine.train.data import load_stream, save_stream

    cache = tmp_path / "cache"
    cache.mkdir()
    tokens = np.arange(1000, dtype=np.int32)
    meta = {"n_tokens": 1000, "dtype": "int32"}
    with pytest.raises(OSError):
        save_stream(tokens.view(FillingStream), meta, cache / "k.bin", cache / "k.json")
    # cached_stream reads a cache only when both files are there: neither is.
    assert sorted(p.name for p in cache.iterdir()) == []
    save_stream(tokens, meta, cache / "k.bin", cache / "k.json")
    assert (load_stream(cache / "k.bin", json.loads((cache / "k.json").read_text()))[0] == tokens).all()
