"""Step 2 of the default model's recipe: the tokenizer (sentencepiece BPE, 8,192 pieces).

Trained on 1,500 training files drawn at random (seed 0) from the corpus, cut into multi-line chunks
(at most 60,000), with the settings in engine/train/spm.py. Usage:
    python recipes/default_model/train_tokenizer.py --run /work/runs/default
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.tokenizer import Tokenizer  # noqa: E402
from engine.train.spm import train_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("/work/runs/default"))
    ap.add_argument("--vocab-size", type=int, default=8192)
    a = ap.parse_args()
    with open(a.run / "corpus" / "train.jsonl") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    random.Random(0).shuffle(texts)
    path = train_tokenizer(texts[:1500], a.run / "tokenizer.model", vocab_size=a.vocab_size, max_sentences=60000)
    tok = Tokenizer(path)
    with open(a.run / "corpus" / "heldout.jsonl") as fh:
        held = [json.loads(line)["text"] for line in fh]
    n_bytes = sum(len(h.encode()) for h in held)
    n_tok = sum(len(tok.encode(h)) for h in held)
    print(f"{path}: {tok.vocab_size} pieces, {n_bytes / n_tok:.2f} bytes per token on the held-out files")


if __name__ == "__main__":
    main()
