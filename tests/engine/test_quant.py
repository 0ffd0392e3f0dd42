"""Weight-only quantization (engine/quant.py): the format, the CPU matmul, quantize-on-load, quantized
checkpoints and their errors, the int4 fallback, --quant on the CLI, and LoRA on quantized weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import load_local_backend
from engine.__main__ import main as engine_main
from engine.backends.local import QuantizationFallbackWarning
from engine.checkpoints import CheckpointError, load_model
from engine.quant import (
    QuantizedLinear,
    QuantSpec,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_int4,
    quantize_int8,
    spec_for_mode,
    unpack_int4,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- the format ----------------------------------------------------------------------------------


def test_int8_is_per_row_symmetric_within_half_a_step() -> None:
    w = randn(40, 96) * torch.linspace(0.01, 3, 40)[:, None]  # rows of very different ranges
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == (40, 96) and s.shape == (40,)
    assert q.abs().max() == 127  # each row's largest weight uses the whole range
    err = (dequantize_int8(q, s) - w).abs()
    assert (err <= s.float()[:, None] * 0.5 + 1e-6).all()


@pytest.mark.parametrize("group", [32, 128])
def test_int4_groups_nibbles_and_partial_last_group(group: int) -> None:
    w = randn(6, 160)  # 160: five groups of 32, or one of 128 and a short one of 32
    q, s = quantize_int4(w, group)
    assert q.dtype == torch.uint8 and q.shape == (6, 80) and s.shape == (6, -(-160 // group))
    nibbles = unpack_int4(q)
    assert torch.equal(pack_int4(nibbles), q)
    assert nibbles.max() <= 15
    # The low nibble holds the even column: column 0 of row 0 is q[0, 0] & 0xF.
    assert (q[0, 0] & 0xF) == nibbles[0, 0] and (q[0, 0] >> 4) == nibbles[0, 1]
    w_hat = dequantize_int4(q, s, group)
    step = s.float().abs().repeat_interleave(group, dim=1)[:, :160]
    assert ((w_hat - w).abs() <= step * 1.02).all()  # half a step; a whole one where +8 clamps to 7
    # Q4_0's rule: each group's weight of largest magnitude is exactly -8 steps, so it comes back exact.
    largest = w.abs().argmax(dim=1)
    rows = torch.arange(6)
    assert (nibbles[rows, largest] == 0).all()
    torch.testing.assert_close(w_hat[rows, largest], w[rows, largest], rtol=1e-2, atol=0)


@pytest.mark.parametrize("rows", [1, 3, 40])  # decode (the packed aten ops) and prefill (dequantize + matmul)
@pytest.mark.parametrize("spec", [QuantSpec(8), QuantSpec(4, 32), QuantSpec(4, 128)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [192, 72])  # 72: not for aten's int8 op, which reads blocks of 16
def test_cpu_matmul_matches_the_dequantize_reference(rows: int, spec: QuantSpec, dtype: torch.dtype,
                                                     width: int) -> None:
    layer = QuantizedLinear.from_weight(randn(50, width, seed=1), spec)  # 50 rows: not a multiple of 16
    x = randn(rows, width).to(dtype)
    expect = x.float() @ layer.dequantized().t()
    got = layer(x)
    assert got.shape == (rows, 50) and got.dtype == dtype
    tol = dict(atol=2e-4, rtol=2e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.03)
    torch.testing.assert_close(got.float(), expect, **tol)


@pytest.mark.parametrize("spec", [QuantSpec(8), QuantSpec(4, 32)], ids=str)
def test_prefill_matmul_runs_outside_inference_mode_after_a_run_inside_it(spec: QuantSpec) -> None:
    """The dequantized weight's scratch buffer, first made during a served prefill (inference mode),
    must not break the same layers run with autograd's tensors afterwards (training, adapters)."""
    layer = QuantizedLinear.from_weight(randn(50, 192, seed=1), spec)
    x = randn(40, 192).bfloat16()
    with torch.inference_mode():
        inside = layer(x)
    outside = layer(x)
    assert torch.equal(inside, outside)


@pytest.mark.parametrize("out_f,in_f,group", [(50, 192, 32), (864, 320, 32), (64, 160, 128)])
def test_cpu_int4_layout_reads_back_exactly(out_f: int, in_f: int, group: int) -> None:
    # The CPU kernel's layout (probed, not documented by PyTorch) must give back our tensors bit for
    # bit: the layer keeps only that layout once it has run, and saves what it reads back.
    from engine.kernels.quant_cpu import CpuInt4

    q, s = quantize_int4(randn(out_f, in_f, seed=3), group)
    cpu = CpuInt4.from_canonical(q, s, group, torch.bfloat16)
    q2, s2 = cpu.canonical()
    assert torch.equal(q2, q) and torch.equal(s2, s)


def test_int4_layer_on_cpu_keeps_one_copy_and_still_saves_the_canonical_format() -> None:
    layer = QuantizedLinear.from_weight(randn(96, 128, seed=4), QuantSpec(4, 32))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = randn(1, 128).bfloat16()
    expect = x.float() @ layer.dequantized().t()
    torch.testing.assert_close(layer(x).float(), expect, atol=0.05, rtol=0.02)
    assert layer.qweight.numel() == 0 and layer._cpu is not None  # the kernel's layout is the only copy
    after = layer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(layer(randn(20, 128).bfloat16()).float(),  # prefill reads the same layout
                               randn(20, 128).bfloat16().float() @ layer.dequantized().t(), atol=0.05, rtol=0.02)


# ---- loading, saving, errors ---------------------------------------------------------------------


def greedy(loaded, prompt: list[int], n: int) -> list[int]:
    from engine.cache import KVCache
    from engine.generate import generate

    dtype = next(loaded.model.parameters()).dtype
    cache = KVCache(loaded.args, len(prompt) + n, "cpu", dtype)
    return generate(loaded.model, cache, prompt, n, stop_ids=set()).tokens


def test_quantize_on_load_replaces_every_linear_and_keeps_the_embedding(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype=torch.float32, quantization=QuantSpec(4, 32))
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in loaded.model.modules() if isinstance(m, QuantizedLinear)]
    assert not linears and len(quantized) == 7 * loaded.args.n_layers + 1  # + the output head
    assert loaded.model.output.spec == QuantSpec(8)  # int8 under int4: measured, see engine/quant.py
    assert loaded.model.tok_embeddings.weight.dtype == torch.float32
    assert loaded.quantization == QuantSpec(4, 32)


def test_meta_layout_quantizes_on_load_like_hugging_face(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The same weights as two Meta shards (q/k rows permuted, tensors concatenated while loading) give
    # the same quantized model as the Hugging Face layout.
    from engine.checkpoints import save_meta_checkpoint

    hf = load_model(tiny_model_dir, dtype=torch.float32)
    meta_dir = save_meta_checkpoint(hf.model, tiny_model_dir / "tokenizer.model", tmp_path / "meta", n_shards=2,
                                    dtype=torch.float32)
    x = torch.tensor([[1, 4, 8, 15, 16, 23, 42]])
    spec = QuantSpec(4, 32)
    torch.testing.assert_close(load_model(meta_dir, dtype=torch.float32, quantization=spec).model(x),
                               load_model(tiny_model_dir, dtype=torch.float32, quantization=spec).model(x))


def test_int8_default_model_keeps_greedy_tokens() -> None:
    bf16 = load_model("models/default")
    int8 = load_model("models/default", quantization=QuantSpec(8))
    prompt = [bf16.tokenizer.bos_id] + bf16.tokenizer.encode_infill("def fibonacci(n):\n    ")
    a, b = greedy(bf16, prompt, 16), greedy(int8, prompt, 16)
    assert sum(x == y for x, y in zip(a, b, strict=True)) >= 12, (a, b)


@pytest.fixture(scope="module")
def quantized_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "tiny-int4"
    assert engine_main(["quantize", "--model", str(tiny_model_dir), "--out", str(out), "--bits", "4",
                        "--group-size", "32", "--dtype", "float32"]) == 0
    return out


def test_quantize_command_writes_a_checkpoint_that_loads_quantized(tiny_model_dir: Path, quantized_dir: Path) -> None:
    config = json.loads((quantized_dir / "config.json").read_text())
    assert config["quantization"] == {"bits": 4, "format": "codellama-local", "group_size": 32,
                                      "output_head_bits": 8}
    tensors = load_file(quantized_dir / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.qweight"].dtype == torch.uint8
    assert "model.layers.0.self_attn.q_proj.weight" not in tensors
    assert (quantized_dir / "model.safetensors").stat().st_size < 0.5 * (tiny_model_dir / "model.safetensors").stat().st_size
    saved = load_model(quantized_dir, dtype=torch.float32)  # no quantization asked: it is in the checkpoint
    fresh = load_model(tiny_model_dir, dtype=torch.float32, quantization=QuantSpec(4, 32))
    assert saved.quantization == QuantSpec(4, 32)
    x = torch.tensor([[1, 5, 9, 30]])
    assert torch.equal(saved.model(x), fresh.model(x))
    with pytest.raises(CheckpointError, match="quantized to int4 .*cannot be loaded as int8"):
        load_model(quantized_dir, quantization=QuantSpec(8))


def test_info_reports_the_stored_quantization(quantized_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine_main(["info", "--model", str(quantized_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"]["bits"] == 4


def _rewrite(src: Path, tmp_path: Path, edit) -> Path:  # noqa: ANN001 - edit(tensors) mutates the dict
    import shutil

    dst = tmp_path / "broken"
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_missing_scales_name_the_tensor(quantized_dir: Path, tmp_path: Path) -> None:
    d = _rewrite(quantized_dir, tmp_path, lambda t: t.pop("model.layers.1.mlp.down_proj.scales"))
    with pytest.raises(CheckpointError, match=r"missing tensors: layers\.1\.feed_forward\.w2\.scales .*qweight and scales"):
        load_model(d)


def test_mismatched_scales_name_the_tensor(quantized_dir: Path, tmp_path: Path) -> None:
    def shrink(t: dict) -> None:
        t["model.layers.0.self_attn.k_proj.scales"] = t["model.layers.0.self_attn.k_proj.scales"][:, :1].clone()

    d = _rewrite(quantized_dir, tmp_path, shrink)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.attention\.wk\.scales' has shape"):
        load_model(d)


def test_wrong_dtype_of_a_quantized_weight_names_the_tensor(quantized_dir: Path, tmp_path: Path) -> None:
    def as_int8(t: dict) -> None:
        t["model.layers.0.mlp.up_proj.qweight"] = t["model.layers.0.mlp.up_proj.qweight"].view(torch.int8)

    d = _rewrite(quantized_dir, tmp_path, as_int8)
    with pytest.raises(CheckpointError, match=r"'layers\.0\.feed_forward\.w3\.qweight' is torch\.int8, its format needs torch\.uint8"):
        load_model(d)


# ---- backend, CLI, fallback ----------------------------------------------------------------------


def test_int4_where_it_cannot_run_warns_and_falls_back_to_int8(tiny_model_dir: Path) -> None:
    # The CPU int4 kernel takes groups of 32, 64, 128 or 256: 48 is a real "cannot do it".
    with pytest.warns(QuantizationFallbackWarning, match="group sizes .* not 48.*using int8 weights"):
        backend = load_local_backend(tiny_model_dir, device="cpu", dtype="float32", quantization="int4",
                                     group_size=48)
    assert backend.quantization == "int8"
    assert "int8 weights" in backend.description


def test_complete_with_quant_flag(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine_main(["complete", "--model", str(tiny_model_dir), "--dtype", "float32", "--quant", "int8",
                        "--prefix", "def f(x):\n    return ", "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"].endswith("float32, int8 weights)")
    assert len(out["tokens"]) == 4


# ---- LoRA on quantized weights -------------------------------------------------------------------


def trained_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter (rank 4) for `model_dir` with a trained-looking, non-zero update."""
    from engine.train.lora import LoRAConfig, add_lora, save_adapter

    trained = load_model(model_dir, dtype=torch.float32)
    cfg = LoRAConfig(rank=4, alpha=8.0)
    for name, p in add_lora(trained.model, cfg).items():
        if name.endswith("lora_B"):
            with torch.no_grad():
                p.copy_(randn(*p.shape, seed=sum(map(ord, name)) % 1000) * 0.3)
    return save_adapter(trained.model, out, cfg, meta={})


def test_lora_adapter_applies_on_top_of_quantized_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from engine.train.lora import apply_adapter

    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    x = torch.tensor([[1, 7, 3, 11, 4]])
    merged = load_model(tiny_model_dir, dtype=torch.float32)
    apply_adapter(merged.model, adapter)
    want = merged.model(x)

    quant = load_model(tiny_model_dir, dtype=torch.float32, quantization=QuantSpec(8))
    base = quant.model(x)
    handle = apply_adapter(quant.model, adapter)
    with_adapter = quant.model(x)
    # With the adapter, the int8 model follows the bf16 one with the adapter, not its own base.
    assert (with_adapter - want).abs().max() < 0.1 * (base - want).abs().max()
    handle.remove()
    assert torch.equal(quant.model(x), base)


def test_lora_applies_in_decode_steps_with_fused_projections(tiny_model_dir: Path, tmp_path: Path) -> None:
    """One-token CPU steps run q/k/v and gate/up fused (engine/fused.py): a merged adapter (bf16 weights)
    must reach the stacked weight, a run-time one (int8) must turn the fused path off."""
    from engine.cache import KVCache
    from engine.generate import generate
    from engine.train.lora import apply_adapter

    adapter = trained_adapter(tiny_model_dir, tmp_path / "adapter")
    prompt = [1, 5, 9, 2, 7, 3]

    def complete(loaded) -> list[int]:  # noqa: ANN001
        cache = KVCache(loaded.args, 64, "cpu", torch.float32)
        return generate(loaded.model, cache, prompt, 16, stop_ids=set()).tokens

    for mode in ("none", "int8"):
        loaded = load_model(tiny_model_dir, dtype=torch.float32, quantization=spec_for_mode(mode))
        base = complete(loaded)
        handle = apply_adapter(loaded.model, adapter)
        with_adapter = complete(loaded)
        for layer in loaded.model.layers:  # the same model with the projections one by one
            layer.attention.fused_qkv = layer.feed_forward.fused_gate_up = None
        assert complete(loaded) == with_adapter
        assert with_adapter != base, "the adapter changes the completion"
        handle.remove()
        loaded.model.fuse_projections()
        assert complete(loaded) == base
