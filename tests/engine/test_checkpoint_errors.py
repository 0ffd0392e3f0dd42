"""Every broken model directory gives an error that names the file and the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.checkpoints import CheckpointError, load_model
from tests import forkserver
from tests.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def meta_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("meta") / "m", layout="meta", n_shards=2)


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_not_a_model_directory(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing")


def test_missing_meta_shard(meta_model_dir, tmp_path):
    d = copy_of(meta_model_dir, tmp_path)
    (d / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointError, match=r"consolidated\.00\.pth: shard is missing"):
        load_model(d)


def test_missing_hf_shard_from_index(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    state = load_file(d / "model.safetensors")
    names = sorted(state)
    half = len(names) // 2
    save_file({k: state[k] for k in names[:half]}, d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors").unlink()
    index = {"weight_map": {k: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
                            for i, k in enumerate(names)}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: shard listed"):
        load_model(d)


def test_sharded_hf_checkpoint_loads(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    state = load_file(d / "model.safetensors")
    names = sorted(state)
    files = {k: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, k in enumerate(names)}
    for f in set(files.values()):
        save_file({k: state[k] for k in names if files[k] == f}, d / f)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": files}))
    ids = torch.tensor([[1, 5, 9, 30]])
    sharded, whole = load_model(d, dtype=torch.float32), load_model(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(sharded.model(ids), whole.model(ids))


def test_shape_mismatch(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["intermediate_size"] += 32
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'layers\.0\.feed_forward\.w[123]\.weight' has shape \("):
        load_model(d)


def test_unexpected_and_missing_tensors(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    state = load_file(d / "model.safetensors")
    state["model.layers.0.mlp.extra.weight"] = torch.zeros(2)
    save_file(state, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.mlp.extra.weight'"):
        load_model(d)

    del state["model.layers.0.mlp.extra.weight"]
    del state["model.norm.weight"]
    save_file(state, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors: norm\.weight"):
        load_model(d)


def test_tokenizer_that_does_not_match_the_embedding(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] = 1000
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tokenizer has 512 pieces but the model's embedding has 1000 rows"):
        load_model(d)


def test_missing_and_corrupt_tokenizer(tiny_model_dir, tmp_path):
    d = copy_of(tiny_model_dir, tmp_path)
    (d / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match=r"tokenizer\.model: not a readable sentencepiece model"):
        load_model(d)
    (d / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model is missing"):
        load_model(d)


def test_corrupt_weight_files(tiny_model_dir, meta_model_dir, tmp_path):
    hf = copy_of(tiny_model_dir, tmp_path)
    data = (hf / "model.safetensors").read_bytes()
    (hf / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_model(hf)

    meta = copy_of(meta_model_dir, tmp_path)
    (meta / "consolidated.01.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"consolidated\.01\.pth: corrupt"):
        load_model(meta)


@pytest.mark.slow
def test_cli_reports_a_bad_model_and_exits_nonzero(tmp_path):
    proc = subprocess.run(
        forkserver.command("engine", "complete", "--model", str(tmp_path), "--prefix", "x"),
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert f"error: {tmp_path}: not a model directory" in proc.stderr
    assert "Traceback" not in proc.stderr
