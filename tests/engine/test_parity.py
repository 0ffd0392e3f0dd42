"""The engine computes what Hugging Face transformers computes, for checkpoints in both layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine.cache import KVCache
from engine.checkpoints import interleaved_to_half, load_model, save_meta_checkpoint
from engine.generate import Sampling, generate
from tests.tiny_models import build_tokenizer

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "mha-theta1e4": dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=1e4),
    "gqa-theta1e6": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6),
    "gqa4-theta1e6": dict(num_attention_heads=8, num_key_value_heads=2, rope_theta=1e6),
}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.model")


def save_hf_model(out: Path, tokenizer_file: Path, heads: int, kv_heads: int, theta: float, seed: int):
    vocab = 512
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=1e-5,
        rope_theta=theta,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        initializer_range=0.2,  # peaked logits: greedy decoding then has no near-ties
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).float().eval()
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer_file, out / "tokenizer.model")
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_greedy_generation_match_transformers(name, tmp_path, tokenizer_file):
    cfg = CONFIGS[name]
    hf = save_hf_model(
        tmp_path / "hf", tokenizer_file, cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rope_theta"], 0
    )
    ours = load_model(tmp_path / "hf", dtype=torch.float32)
    assert ours.args.rope_theta == cfg["rope_theta"]
    assert ours.args.n_kv_heads == cfg["num_key_value_heads"]

    ids = torch.randint(3, 512, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours.model(ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    # Greedy generation, 32 tokens, token for token (no stop token on either side).
    with torch.no_grad():
        hf_out = hf.generate(
            ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, ids.shape[1] :].tolist()
    cache = KVCache(ours.args, 80, "cpu", torch.float32)
    result = generate(ours.model, cache, ids[0].tolist(), 32, stop_ids=set(), sampling=Sampling())
    assert result.tokens == hf_out

    # The same weights in Meta's layout, one shard and two, load to the same logits.
    for shards in (1, 2):
        meta_dir = save_meta_checkpoint(ours.model, tokenizer_file, tmp_path / f"meta{shards}", n_shards=shards,
                                        dtype=torch.float32)
        assert len(list(meta_dir.glob("consolidated.*.pth"))) == shards
        meta = load_model(meta_dir, dtype=torch.float32)
        assert meta.layout == "meta"
        with torch.no_grad():
            torch.testing.assert_close(meta.model(ids), expected, atol=1e-4, rtol=1e-4)


def test_meta_row_order_is_interleaved_rotary():
    """Independent of our own save path: Meta's weights rotate interleaved pairs (as complex numbers);
    after `interleaved_to_half` the rotate-half rotary must give the same q, up to the same row order."""
    torch.manual_seed(0)
    n_heads, head_dim, dim, T = 2, 8, 16, 5
    w_meta = torch.randn(n_heads * head_dim, dim)
    x = torch.randn(T, dim)
    pos = torch.arange(T, dtype=torch.float32)
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(pos, freqs)  # (T, D/2)

    # Meta: view consecutive pairs as complex numbers and multiply by e^{i*angle}.
    q_meta = (x @ w_meta.T).view(T, n_heads, head_dim // 2, 2)
    rotated = torch.view_as_real(torch.view_as_complex(q_meta) * torch.polar(torch.ones_like(angles), angles)[:, None])
    rotated = rotated.reshape(T, n_heads, head_dim)  # interleaved order

    # Ours: rotate-half on the permuted rows.
    q_half = (x @ interleaved_to_half(w_meta, n_heads).T).view(T, n_heads, head_dim)
    x1, x2 = q_half.chunk(2, dim=-1)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    ours = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    # Same numbers: ours[..., i] is pair element 0 of pair i, ours[..., i + D/2] element 1.
    back = torch.stack((ours[..., : head_dim // 2], ours[..., head_dim // 2 :]), dim=-1).reshape(T, n_heads, head_dim)
    torch.testing.assert_close(back, rotated, atol=1e-5, rtol=1e-5)


def test_kv_cache_generation_equals_full_recomputation(tiny_model_dir):
    loaded = load_model(tiny_model_dir, dtype=torch.float32)
    model = loaded.model
    prompt = loaded.tokenizer.encode("def fibonacci(n):\n    if n < 2:\n        return n\n", bos=True)

    cache = KVCache(loaded.args, 8, "cpu", torch.float32)  # deliberately small: the cache must grow
    cached = generate(model, cache, prompt, 24, stop_ids=set()).tokens

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(24):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt) :]

    # A second request sharing a prefix reuses the cache and still gives the cold answer.
    longer = prompt + cached[:5]
    warm = generate(model, cache, longer, 10, stop_ids=set())
    # The first request's prompt and generated tokens stay cached; the last one is run again to
    # get the next token's logits.
    assert warm.cached_tokens == len(longer) - 1
    cold = generate(model, KVCache(loaded.args, 8, "cpu", torch.float32), longer, 10, stop_ids=set())
    assert warm.tokens == cold.tokens and cold.cached_tokens == 0


def test_chunked_prefill_matches_single_pass(tiny_model_dir):
    from engine.generate import prefill

    loaded = load_model(tiny_model_dir, dtype=torch.float32)
    prompt = torch.randint(3, loaded.args.vocab_size, (300,), generator=torch.Generator().manual_seed(3)).tolist()
    one = prefill(loaded.model, KVCache(loaded.args, 300, "cpu", torch.float32), prompt, chunk_size=1000)
    chunked = prefill(loaded.model, KVCache(loaded.args, 300, "cpu", torch.float32), prompt, chunk_size=64)
    torch.testing.assert_close(one, chunked, atol=1e-4, rtol=1e-4)
