"""Where tokens come from: the `Backend` protocol (base.py) and its two implementations.

- local.py: the PyTorch engine in this process (checkpoint, KV cache pool, generation).
- remote.py: an OpenAI-compatible or llama.cpp server, over connection.py (HTTP) and sse.py (its stream).
"""
