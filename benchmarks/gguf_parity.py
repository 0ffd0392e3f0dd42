"""Does our GGUF export run in llama.cpp as the model runs in our engine? One table, no assertions.

Exports a model (default: the embedded default model, or a random-weight tiny one when that is missing)
to a float32 GGUF (or Q8_0 / Q4_0 with --quant), loads it with llama-cpp-python, and for a few prompts
compares with our engine in float32:
  - tokenisation: llama.cpp's tokenizer on the GGUF vocabulary vs our sentencepiece tokenizer;
  - greedy completions: the same prompt ids (our PSM/SPM layout) decoded greedily by both, token ids
    compared, plus the largest logit difference at the first step.

Needs llama-cpp-python (`make test-integration` installs it; it compiles llama.cpp unless PIP_FIND_LINKS
names a folder with a wheel) and the gguf package. tests/integration/test_gguf_parity.py asserts what
this prints.

    .venv/bin/python benchmarks/gguf_parity.py [--model DIR] [--adapter DIR] [--max-new-tokens 24]
        [--quant q8_0|q4_0]

With --quant the tokens are not expected to be identical (llama.cpp runs rounded weights): the table
shows how far the quantized file follows the float model, and a summary line counts the prompts whose
greedy completion is the same and the tokens generated before the first difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.llama_cpp_compat import open_llama  # noqa: E402
from engine import default_model_dir, load_local_backend  # noqa: E402
from engine.backends.base import CompletionRequest  # noqa: E402
from engine.export import export_gguf  # noqa: E402
from engine.generate import common_prefix_length  # noqa: E402

PROMPTS = [
    ("def circle_area(radius: float) -> float:\n    return ", "\n\n\ndef main():\n    print(circle_area(2.0))\n"),
    ("import json\n\n\ndef load(path):\n    with open(path) as f:\n        ", "\n"),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        ", ""),
]
TEXTS = [
    "def f(x):\n    return x * 2  # double\n",
    "    if __name__ == '__main__':\n\tmain()\n",
    "naïve café → ∑ émoji 🙂 tabs\tand  double  spaces",
]


def llama_greedy(llm, prompt: list[int], max_new: int, stop: set[int]) -> tuple[list[int], np.ndarray]:
    llm.reset()
    llm.eval(prompt)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    out: list[int] = []
    logits = first
    while len(out) < max_new:
        nxt = int(np.argmax(logits))
        if nxt in stop:
            break
        out.append(nxt)
        llm.eval([nxt])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return out, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quant", choices=("q8_0", "q4_0"), help="export the GGUF with these weight blocks")
    args = ap.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed: pip install llama-cpp-python", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gguf-parity-"))
    model_dir = Path(args.model) if args.model else default_model_dir()
    if not (model_dir / "tokenizer.model").is_file():
        from tests.tiny_models import build_tiny_model

        model_dir = build_tiny_model(work / "tiny-model")
        print(f"(no model at the default path: a random-weight tiny model at {model_dir})")
    gguf_path = export_gguf(model_dir, work / f"model-{args.quant or 'f32'}.gguf", adapter=args.adapter,
                            dtype="float32", quant=args.quant)
    ours = load_local_backend(model_dir, device="cpu", dtype="float32", adapter=args.adapter)
    tok = ours.tok
    llm, note = open_llama(gguf_path, n_ctx=4096, n_threads=args.threads, n_batch=512, logits_all=True,
                           verbose=False)
    stop = {tok.eos_id} | ({tok.eot_id} if tok.eot_id is not None else set())

    print(f"\nmodel: {model_dir} -> {gguf_path.name}{'; ' + note if note else ''}\n")
    print("| text | our ids | llama.cpp ids | same |")
    print("|---|---:|---:|---|")
    for text in TEXTS:
        a = tok.encode(text, bos=True)
        b = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        print(f"| {text[:28]!r} | {len(a)} | {len(b)} | {'yes' if a == b else 'NO'} |")

    print("\n| prompt | format | ours (tokens) | llama.cpp (tokens) | same tokens | max |Δlogit| step 1 |")
    print("|---|---|---:|---:|---|---:|")
    same_count, agreed, total = 0, 0, 0
    for prefix, suffix in PROMPTS:
        for fmt in ("psm", "spm"):
            request = CompletionRequest(prefix=prefix, suffix=suffix, fim_format=fmt,  # type: ignore[arg-type]
                                        max_new_tokens=args.max_new_tokens, token_healing=False)
            result = ours.complete(request)
            with torch.no_grad():
                first_ours = ours.model(torch.tensor([result.prompt_tokens]))[0, -1].float().numpy()
            theirs, first_theirs = llama_greedy(llm, result.prompt_tokens, args.max_new_tokens, stop)
            diff = float(np.abs(first_ours - first_theirs[: first_ours.shape[0]]).max())
            same = "yes" if theirs == result.tokens else "NO"
            same_count += theirs == result.tokens
            agreed += common_prefix_length(theirs, result.tokens)
            total += len(result.tokens)
            print(f"| {prefix.splitlines()[0][:24]!r} | {fmt} | {len(result.tokens)} | {len(theirs)} | {same} "
                  f"| {diff:.2e} |")
            if same == "NO":
                print(f"|   ours: {tok.decode_infill(result.tokens)!r} | | | | | |")
                print(f"|   llama.cpp: {tok.decode_infill(theirs)!r} | | | | | |")
    print(f"\nllama.cpp {args.quant or 'f32'} vs our float32: {same_count} of {2 * len(PROMPTS)} completions identical; "
          f"{agreed} of {total} of our tokens generated before the first difference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
