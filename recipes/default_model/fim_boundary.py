"""Does a model continue the prefix where a fill-in-the-middle middle begins? PSM against SPM.

    python recipes/default_model/fim_boundary.py --model models/default --data-jsonl RUN/corpus/heldout.jsonl

For documents split the way training splits them (engine/train/fim.py: two uniform character positions),
the first middle token's accuracy and the middle's loss, in each order, and the model's most frequent
first guesses. In SPM the middle's first token comes right after the prefix's last one; in PSM the whole
suffix stands between them, so a model that has not learnt to look back across it starts something else
(the shipped default model writes `# path`, the start of a file: what follows <MID> in SPM). HumanEval
tells the same later and at a hundred times the cost: run this at the end of pretraining (issue 15,
"both FIM orders"; benchmarks/RESULTS.md, session 17).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from engine.checkpoints import load_model  # noqa: E402
from engine.train.data import documents, read_jsonl_files  # noqa: E402
from engine.train.fim import fim_tokens, split_document  # noqa: E402


def boundary(model_dir: str, data: str, n_docs: int, seed: int = 0) -> dict[str, dict]:
    loaded = load_model(model_dir, dtype=torch.float32)
    tok, model = loaded.tokenizer, loaded.model
    texts = tok.piece_texts()
    files = read_jsonl_files(data)
    rng = random.Random(seed)
    docs = [d for d in documents(rng.sample(files, min(len(files), 4 * n_docs)), 1500) if len(d) > 600][:n_docs]
    out = {}
    for order in ("psm", "spm"):
        split_rng = random.Random(seed + 1)  # the same splits for both orders
        right = cases = 0
        loss, tokens = 0.0, 0
        guesses: Counter[str] = Counter()
        for doc in docs:
            prefix, middle, suffix = split_document(doc, split_rng)
            if not middle.strip():
                continue
            ids = fim_tokens(tok, prefix, middle, suffix, spm=order == "spm")
            start = len(ids) - len(tok.encode_infill(middle)) - 1  # the middle and <EOT>
            with torch.inference_mode():
                logp = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
            targets = torch.tensor(ids[start:])
            loss -= float(logp[start - 1 : len(ids) - 1].gather(1, targets[:, None]).sum())
            tokens += len(targets)
            guess = int(logp[start - 1].argmax())
            right += guess == ids[start]
            cases += 1
            guesses[texts[guess]] += 1
        out[order] = {"first_token_right": right, "cases": cases, "middle_loss": round(loss / max(tokens, 1), 3),
                      "first_guesses": guesses.most_common(5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-jsonl", required=True, help="source files, as the recipe's corpus/*.jsonl[.xz]")
    ap.add_argument("--docs", type=int, default=60)
    opts = ap.parse_args()
    result = boundary(opts.model, opts.data_jsonl, opts.docs)
    print(json.dumps(result, indent=1))
    for order, r in result.items():
        print(f"{order.upper()}: first middle token right in {r['first_token_right']} of {r['cases']}, "
              f"middle loss {r['middle_loss']} nats")


if __name__ == "__main__":
    main()
