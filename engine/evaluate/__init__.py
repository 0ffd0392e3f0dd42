"""`python -m engine eval`: the evaluations of the Code Llama paper, at the user's scale.

    humaneval   HumanEval single-line infilling (1,033 cases), PSM / SPM, pass@1 and exact match
    keys        synthetic key retrieval by context length and key position
    perplexity  perplexity of the same tokens given longer and longer context, table + PNG
    infill      single-line infilling exact match on held-out files of a repository

Each runs for one or more models (and optionally the first one with a LoRA adapter) and prints the
results side by side, so a before/after comparison is one command. Everything goes through the
engine's public API (load_local_backend, KVCache, generate, prompts).
"""
