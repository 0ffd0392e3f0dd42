"""Our engine from another checkout, for `engine_bench.py --quant --baseline DIR`: the old code runs in
the same rounds as the new one, so a before/after ratio is not a comparison across load swings.

Started with PYTHONPATH=DIR; `engine` is imported first, from there, and engine_bench's helpers then
run on it (they use only load_model, KVCache and generate, which every checkout has). Reads JSON lines
{"model": path, "mode": "none"|"int8"|"int4", "prompt": [ids], "threads": n} and answers each with the
measurements of one cold completion ({"cold_ms", "ttft_cold_ms", "decode_tok_s"}).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import engine  # noqa: F401 - first, from the baseline checkout on PYTHONPATH

sys.path.append(str(Path(__file__).resolve().parent))
import engine_bench  # noqa: E402 - after engine, so its `engine` imports find the baseline's
import torch  # noqa: E402


def main() -> int:
    models: dict[tuple[str, str], engine_bench.LoadedModel] = {}
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        key = (request["model"], request["mode"])
        if key not in models:
            models[key] = engine_bench.load_model(Path(key[0]), dtype=torch.bfloat16,
                                                  quantization=engine_bench.spec_for_mode(key[1]))
        print(json.dumps(engine_bench.ours_cold_run(models[key], request["prompt"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
