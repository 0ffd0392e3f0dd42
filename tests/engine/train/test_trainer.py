"""The training loop: it learns, it resumes exactly, adapters match merged weights, data prep is safe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoints import load_model
from engine.tokenizer import Tokenizer
from engine.train.data import DataConfig, WindowSampler, cached_stream
from engine.train.lora import LoRAConfig, add_lora, apply_adapter, merge_lora, save_adapter, whole_tensors
from engine.train.sources import collect_repo
from engine.train.trainer import TrainConfig, chunked_cross_entropy, latest_checkpoint, train


def _data(tiny_model_dir: Path, code_repo: Path, tmp_path: Path, seq_len: int = 64):
    files = collect_repo(code_repo)
    stream, meta = cached_stream(files, tiny_model_dir / "tokenizer.model", DataConfig(seq_len=seq_len),
                                 tmp_path / "cache", log=False)
    return files, stream, meta


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, seq_len=64, micro_batch=2, grad_accum=2, lr=3e-3, warmup_steps=2, dtype="fp32",
                checkpoint_every_s=1e9, log_every=1, loss_chunk=50)
    base.update(kw)
    return TrainConfig(**base)


def _fresh(tiny_model_dir: Path):
    return load_model(tiny_model_dir, dtype=torch.float32).model


def test_data_prep_skips_ignored_and_secret_files_and_is_cached(tiny_model_dir, code_repo, tmp_path):
    files, stream, meta = _data(tiny_model_dir, code_repo, tmp_path)
    paths = {f.path for f in files}
    assert paths == {f"pkg/mod{i}.py" for i in range(12)}
    text = Tokenizer(tiny_model_dir / "tokenizer.model").decode([int(t) for t in stream])
    for marker in ("IGNORED_MARKER", "IGNORED_LOG_MARKER", "ENV_SECRET_MARKER", "KEY_SECRET_MARKER", "PRIVATE KEY"):
        assert marker not in text
    assert "pkg/mod3.py" in text  # path headers
    # A second preparation reads the memory-mapped cache instead of tokenising again.
    again, meta2 = cached_stream(files, tiny_model_dir / "tokenizer.model", DataConfig(seq_len=64),
                                 tmp_path / "cache", log=False)
    assert isinstance(again, __import__("numpy").memmap)
    assert meta2["data_hash"] == meta["data_hash"] and (again == stream).all()


def test_chunked_cross_entropy_equals_full():
    torch.manual_seed(0)
    h = torch.randn(2, 37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (2, 37))
    full = torch.nn.functional.cross_entropy((h @ w.T).reshape(-1, 50), t.reshape(-1))
    gh, gw = torch.autograd.grad(full, (h, w))
    chunked = chunked_cross_entropy(h, w, t, chunk=10)
    ch, cw = torch.autograd.grad(chunked, (h, w))
    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(ch, gh)
    torch.testing.assert_close(cw, gw)


def test_weighted_cross_entropy_is_the_weighted_mean_and_zero_weight_tokens_teach_nothing():
    torch.manual_seed(0)
    h = torch.randn(1, 23, 16, requires_grad=True)
    w = torch.randn(50, 16)
    t = torch.randint(0, 50, (1, 23))
    weights = torch.rand(1, 23) * 3
    weights[0, :5] = 0.0
    per_token = torch.nn.functional.cross_entropy((h @ w.T).reshape(-1, 50), t.reshape(-1), reduction="none")
    expected = (per_token * weights.reshape(-1)).sum() / weights.sum()
    got = chunked_cross_entropy(h, w, t, chunk=7, loss_weights=weights)
    torch.testing.assert_close(got, expected)
    (grad,) = torch.autograd.grad(got, h)
    assert grad[0, :5].abs().max() == 0 and grad[0, 5:].abs().max() > 0


def test_the_sampler_gives_each_window_its_own_targets_weights():
    stream = np.arange(4 * 8 + 1)
    weights = stream.astype(np.float32) / 10
    sampler = WindowSampler(stream, 8, 2, seed=3, loss_weights=weights)
    for index in range(3):
        batch, batch_weights = sampler.batch(index), sampler.batch_weights(index)
        assert batch_weights is not None and batch_weights.shape == (2, 8)
        torch.testing.assert_close(batch_weights, batch[:, 1:].float() / 10)  # the weight of each target token
    assert WindowSampler(stream, 8, 2, seed=3).batch_weights(0) is None
    with pytest.raises(ValueError, match="loss weights"):
        WindowSampler(stream, 8, 2, seed=3, loss_weights=weights[:-1])


def test_a_few_steps_lower_the_loss(tiny_model_dir, code_repo, tmp_path):
    _, stream, _ = _data(tiny_model_dir, code_repo, tmp_path)
    model = _fresh(tiny_model_dir)
    cfg = _cfg(steps=12, lr=1e-2, dtype="bf16")
    losses: list[float] = []
    train(model, WindowSampler(stream, 64, 2, 0), cfg, tmp_path / "run", on_log=lambda r: losses.append(r["loss"]))
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 12


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_model_dir, code_repo, tmp_path):
    _, stream, _ = _data(tiny_model_dir, code_repo, tmp_path)
    cfg = _cfg()

    straight = _fresh(tiny_model_dir)
    train(straight, WindowSampler(stream, 64, 2, 0), cfg, tmp_path / "a")

    interrupted = _fresh(tiny_model_dir)
    train(interrupted, WindowSampler(stream, 64, 2, 0), cfg, tmp_path / "b", stop_after=3)
    assert latest_checkpoint(tmp_path / "b").name == "step-0000003"
    # A half-written checkpoint (no COMPLETE marker) is never taken for a good one.
    (tmp_path / "b" / "step-0000005").mkdir()
    (tmp_path / "b" / "step-0000005" / "state.pt").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path / "b").name == "step-0000003"

    resumed = _fresh(tiny_model_dir)  # a new process: fresh weights, state comes from the checkpoint
    train(resumed, WindowSampler(stream, 64, 2, 0), cfg, tmp_path / "b", resume=True)
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_adapter_applied_at_load_gives_the_merged_models_logits(tiny_model_dir, code_repo, tmp_path):
    _, stream, meta = _data(tiny_model_dir, code_repo, tmp_path)
    model = _fresh(tiny_model_dir)
    lcfg = LoRAConfig(rank=4, alpha=8, train_norms=True)
    trainable = add_lora(model, lcfg)
    train(model, WindowSampler(stream, 64, 2, 0), _cfg(steps=3, lr=2e-2), tmp_path / "run", trainable=trainable)
    model.args.rope_theta = 5e5  # the adapter records the base it was trained with
    save_adapter(model, tmp_path / "adapter", lcfg, {"rope_theta": 5e5, "seq_len": 64, "data_hash": meta["data_hash"]})
    merged = merge_lora(model).eval()

    x = torch.tensor([[1, 5, 9, 20, 33, 7, 2, 11]])
    with torch.no_grad():
        want = merged(x)
        base = _fresh(tiny_model_dir).eval()
        before = base(x)
        handle = apply_adapter(base, tmp_path / "adapter")
        got = base(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(before, want, atol=1e-3)  # the adapter changed something
        handle.remove()  # switching adapters: the base comes back bit for bit
        assert torch.equal(base(x), before)
    info = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert info["rank"] == 4 and info["rope_theta"] == 5e5 and info["data_hash"] == meta["data_hash"]


def test_a_weakened_adapter_moves_every_weight_that_fraction_of_the_way(tiny_model_dir, code_repo, tmp_path):
    """Adaptation's `strength`: the saved adapter takes each weight `strength` of the way from the base
    model to the trained one, the low-rank updates and the embeddings trained in full alike."""
    _, stream, _ = _data(tiny_model_dir, code_repo, tmp_path)
    lcfg = LoRAConfig(rank=4, alpha=8, train_embeddings=True)
    model = _fresh(tiny_model_dir)
    trainable = add_lora(model, lcfg)
    base = whole_tensors(model)
    train(model, WindowSampler(stream, 64, 2, 0), _cfg(steps=3, lr=2e-2), tmp_path / "run", trainable=trainable)
    save_adapter(model, tmp_path / "weak", lcfg, {}, strength=0.25, base=base)
    trained = {n: p.detach().float().clone() for n, p in merge_lora(model).named_parameters()}
    before = {n: p.detach().float().clone() for n, p in _fresh(tiny_model_dir).named_parameters()}

    model = _fresh(tiny_model_dir)
    apply_adapter(model, tmp_path / "weak")
    got = {n: p.detach().float() for n, p in model.named_parameters()}
    for name in ("layers.0.attention.wq.weight", "layers.1.feed_forward.w2.weight", "tok_embeddings.weight"):
        assert not torch.allclose(trained[name], before[name])
        torch.testing.assert_close(got[name], before[name] + 0.25 * (trained[name] - before[name]), rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "weak" / "adapter.json").read_text())["strength"] == 0.25


def test_train_command_writes_an_adapter_and_resumes(tiny_model_dir, code_repo, tmp_path):
    from engine.train.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    argv = ["train", "--model", str(tiny_model_dir), "--repo", str(code_repo), "--out", str(tmp_path / "out"),
            "--seq-len", "64", "--steps", "2", "--lora-rank", "4", "--batch-tokens", "128"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = tmp_path / "out"
    assert (out / "adapter.safetensors").is_file() and (out / "loss.png").is_file()
    assert json.loads((out / "adapter.json").read_text())["seq_len"] == 64
    held = json.loads((out / "heldout.json").read_text())
    assert isinstance(held, list)
    args = parser.parse_args([*argv[:-6], "--seq-len", "64", "--steps", "3", "--lora-rank", "4", "--resume"])
    assert args.func(args) == 0
    assert latest_checkpoint(out / "run").name == "step-0000003"
