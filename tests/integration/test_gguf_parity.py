"""The default model exported to GGUF by our exporter runs in llama.cpp as it runs in our engine:
the same tokens for the same text, Code Llama's infilling pieces where llama.cpp looks for them, and
the same greedy completion for the same prompt ids (benchmarks/gguf_parity.py prints the same
comparison as a table).

What llama.cpp does with prompt TEXT is pinned here too, because the remote backend relies on it:
it reads `▁<PRE>` (the piece's own text), not `<PRE>`, as the control token, and it tokenizes every run
of text after a control token with a space in front."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test-integration)")

import torch  # noqa: E402

from benchmarks.gguf_parity import PROMPTS, TEXTS, llama_greedy  # noqa: E402
from engine.backends.base import CompletionRequest  # noqa: E402
from engine.prompts import PIECE_MARKERS, fim_prompt_text, infill_prompt  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MAX_NEW = 24


@pytest.fixture(scope="module")
def ours(engine_f32):
    return engine_f32


@pytest.fixture(scope="module")
def llm(default_gguf: Path):
    model = llama_cpp.Llama(model_path=str(default_gguf), n_ctx=4096, n_threads=1, n_batch=512, logits_all=True,
                            verbose=False)
    yield model
    model.close()


def lc_tokens(llm, text: str, bos: bool = False, special: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)


# ---- tokenisation --------------------------------------------------------------------------------


WHITESPACE = ([f"a{' ' * k}b" for k in range(1, 34)] + [f"x\n{' ' * k}y\n" for k in range(0, 25)]
              + ["\t" * k + "x" for k in range(1, 6)] + [" " * k for k in range(1, 20)]
              + ["\r\n\r\n  \n", "\u00a0x", "\u3000y", "e\u0301", "ﬁ ＡＢ ①"])


def test_llamacpp_tokenizes_text_as_sentencepiece_does(ours, llm):
    """Our sentencepiece tokenizer (runs of spaces are pieces of their own, byte fallback) against
    llama.cpp's on the GGUF vocabulary: the bench's texts, whitespace runs, and every source file of
    this repository (about 300 k tokens)."""
    tok = ours.tok
    for text in TEXTS + WHITESPACE:
        assert lc_tokens(llm, text, bos=True) == tok.encode(text, bos=True), repr(text)
    files = sorted(f for pattern in ("engine/**/*.py", "lsp_server/**/*.py", "tests/**/*.py", "editors/**/*.lua",
                                     "editors/vscode/src/*.ts", "*.md", "docs/*.md")
                   for f in glob.glob(str(REPO / pattern), recursive=True))
    assert len(files) > 50
    differ = [f for f in files if lc_tokens(llm, text := Path(f).read_text(errors="replace")) != tok.encode(text)]
    assert differ == []


def test_infilling_pieces_are_control_tokens_read_by_their_piece_text(ours, llm):
    tok = ours.tok
    pieces = {"▁<PRE>": tok.prefix_id, "▁<SUF>": tok.suffix_id, "▁<MID>": tok.middle_id, "▁<EOT>": tok.eot_id}
    for piece, token in pieces.items():
        assert lc_tokens(llm, piece, special=True) == [token], piece
        assert token not in lc_tokens(llm, piece, special=False), piece  # user text is only text
        plain = piece.removeprefix("▁")
        # Code Llama's spelling in a Hugging Face tokenizer (" <PRE>") is NOT the control token here.
        assert token not in lc_tokens(llm, plain, special=True) + lc_tokens(llm, " " + plain, special=True), plain
    # The GGUF names them, which llama.cpp's /infill and its end-of-generation check use.
    vocab = llm._model.vocab
    assert [llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab),
            llama_cpp.llama_vocab_fim_mid(vocab)] == [tok.prefix_id, tok.suffix_id, tok.middle_id]
    assert llama_cpp.llama_vocab_is_eog(vocab, tok.eot_id) and llama_cpp.llama_vocab_is_eog(vocab, tok.eos_id)


CASES = [(p, s) for p, s in PROMPTS] + [
    ("def add(a, b):\n    return a", " + b\n"),       # suffix starts with a space
    ("x = ", ""),                                     # no suffix
    ("    if ok:\n        ", "  # done\n"),
    ("print(", "x)\n"),                               # suffix starts with a letter
]


@pytest.mark.parametrize("fmt", ["spm", "psm"])
@pytest.mark.parametrize("prefix,suffix", CASES, ids=range(len(CASES)))
def test_the_backends_prompt_text_gives_the_engines_ids(ours, llm, prefix, suffix, fmt):
    """The remote backend's text for llama.cpp (PIECE markers) against engine.prompts' ids: exact when
    the suffix is empty or starts with a space; otherwise llama.cpp reads the suffix with one space in
    front (it puts one before all text after a control token, and text cannot say otherwise)."""
    tok = ours.tok
    theirs = lc_tokens(llm, fim_prompt_text(prefix, suffix, fmt, PIECE_MARKERS), bos=True, special=True)
    if suffix == "" or suffix.startswith(" "):
        assert theirs == infill_prompt(tok, prefix, suffix, fmt)
    else:
        assert theirs == infill_prompt(tok, prefix, " " + suffix, fmt)
        assert theirs != infill_prompt(tok, prefix, suffix, fmt)


# ---- greedy completions --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["spm", "psm"])
@pytest.mark.parametrize("prefix,suffix", PROMPTS, ids=[p.splitlines()[0][:16] for p, _ in PROMPTS])
def test_greedy_completion_is_the_same_in_llamacpp(ours, llm, prefix, suffix, fmt):
    """Our prompt ids decoded greedily by both: the same tokens, and the first step's logits within float32
    noise of each other (two implementations, different summation orders)."""
    tok = ours.tok
    request = CompletionRequest(prefix=prefix, suffix=suffix, fim_format=fmt, max_new_tokens=MAX_NEW,
                                token_healing=False)
    result = ours.complete(request)
    assert result.prompt_tokens == infill_prompt(tok, prefix, suffix, fmt)
    with torch.no_grad():
        first_ours = ours.model(torch.tensor([result.prompt_tokens]))[0, -1].float().numpy()
    theirs, first_theirs = llama_greedy(llm, result.prompt_tokens, MAX_NEW, tok.stop_ids())
    diff = float(np.abs(first_ours - first_theirs[: first_ours.shape[0]]).max())
    print(f"\n{fmt} {prefix.splitlines()[0][:24]!r}: ours {len(result.tokens)} tokens, llama.cpp {len(theirs)}, "
          f"max |Δlogit| step 1 {diff:.2e}, completion {tok.decode_infill(result.tokens)[:40]!r}")
    assert diff < 0.05
    assert theirs == result.tokens, (tok.decode_infill(result.tokens), tok.decode_infill(theirs))


# ---- quantized exports ---------------------------------------------------------------------------


@pytest.mark.parametrize(("quant", "min_agreement"), [("q8_0", 0.5), ("q4_0", 0.2)])
def test_quantized_gguf_loads_in_llamacpp_and_follows_our_greedy_tokens(ours, tmp_path, quant, min_agreement):
    """`engine export --quant q8_0|q4_0`: llama.cpp loads the file and its greedy completions follow our
    float32 engine's for a good share of the tokens (measured on the default model: Q8_0 101 of 144
    before the first difference, 4 of 6 completions identical; Q4_0 56 of 144)."""
    from benchmarks.llama_cpp_compat import open_llama
    from engine.export import export_gguf
    from engine.generate import common_prefix_length

    path = export_gguf(ours.loaded.path, tmp_path / f"default-{quant}.gguf", dtype="float32", quant=quant)
    llm, _ = open_llama(path, n_ctx=4096, n_threads=1, n_batch=512, logits_all=True, verbose=False)
    try:
        agreed = total = 0
        for prefix, suffix in PROMPTS:
            for fmt in ("spm", "psm"):
                result = ours.complete(CompletionRequest(prefix=prefix, suffix=suffix, fim_format=fmt,
                                                         max_new_tokens=MAX_NEW, token_healing=False))
                theirs, _ = llama_greedy(llm, result.prompt_tokens, MAX_NEW, ours.tok.stop_ids())
                assert theirs, "llama.cpp generated nothing"
                agreed += common_prefix_length(theirs, result.tokens)
                total += len(result.tokens)
    finally:
        llm.close()
    assert agreed >= min_agreement * total, (agreed, total)


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_quantized_export_is_byte_identical_to_llamacpps_own_quantizer(default_gguf, tmp_path, quant):
    """llama.cpp's `llama_model_quantize` run on our float32 export writes the same blocks, tensor for
    tensor (with Q4_0's output head at Q8_0, its choice for a row of 320), as `export --quant`."""
    import ctypes

    import gguf

    from engine import default_model_dir
    from engine.export import export_gguf

    theirs = tmp_path / f"llama-{quant}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[quant]
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(default_gguf).encode(), str(theirs).encode(), ctypes.byref(params)) == 0
    ours = export_gguf(default_model_dir(), tmp_path / f"ours-{quant}.gguf", dtype="float32", quant=quant)
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert np.array_equal(a[name].data, b[name].data), name
