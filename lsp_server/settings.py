"""Server settings: one dataclass filled from the client's camelCase `codellama` section.

Invalid values never stop the server: each one becomes a user-facing problem string and the key keeps
its default. The keys are a contract with the editor clients (see lsp_server/README.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from engine.backends.base import COMPILE_DECODE_MODES, DTYPE_NAMES, KV_CACHE_DTYPES, Backend, FimFormat

DEVICES = ("auto", "cpu", "cuda")
DTYPE_ALIASES = {"auto": "auto", **DTYPE_NAMES}  # the engine's names, and "auto"
MIN_CONTEXT_TOKENS = 256
MAX_CONTEXT_TOKENS = 100_000


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "none"  # weight quantization of the local engine: "none", "int8", "int4"
    kv_cache_dtype: str = "auto"  # the KV cache's storage: "auto", "bfloat16", "float32", "int8"
    fim_format: FimFormat = "spm"
    max_context_tokens: int | None = None  # None: automatic
    max_new_tokens: int = 128
    temperature: float = 0.0
    backend: str = "local"
    enable: bool = True
    repository_context: bool = True
    # After `self.` / `module.`: the first name suggested is one that exists (lsp_server/context/members.py)
    known_names: bool = True
    # Mix into each token's choice what followed the same tokens elsewhere in the prompt (engine/prompt_copy.py)
    copy_from_prompt: bool = True
    multiline: str = "auto"
    exclude: tuple[str, ...] = field(default_factory=tuple)
    speculative_decoding: bool = True
    cuda_graphs: bool = True  # the local engine's decode steps replay CUDA graphs on a CUDA GPU
    # The local engine on CPU compiles its decode step in the background ("auto") or never ("off": the
    # default, see engine/compiled_decode.py for why)
    compile_decode: str = "off"
    kv_cache_mb: int = 512  # the local engine's KV caches, all sequences together
    instruct_model: str | None = None  # None: code actions use the completion model
    instruct_max_new_tokens: int = 512
    # Whether the model serving code actions follows instructions; None: detect (lsp_server/capability.py)
    instruct_capable: bool | None = None
    # Remote backends only: sent as "Authorization: Bearer" to the `backend` host (never logged), and the
    # served model's name (default: the first one the server lists).
    api_key: str | None = field(default=None, repr=False)
    remote_model: str | None = None
    # Accept-then-next: while the editor shows a suggestion, compute the one it will ask for once the
    # user accepts it (the engine is idle then), so the next ghost text comes from the cache.
    prefetch_after_accept: bool = True

    def engine_key(self) -> tuple[Any, ...]:
        """The settings that need a model (re)load when they change."""
        return (self.model, self.adapter, self.device, self.dtype, self.quantization, self.kv_cache_dtype, self.backend,
                self.api_key, self.remote_model, self.kv_cache_mb, self.cuda_graphs, self.compile_decode)

    def for_instruct_model(self) -> Settings:
        """What the code actions' own model (`instructModel`) loads with: these settings, that model
        directory, no adapter (an adapter belongs to the completion model)."""
        return replace(self, model=self.instruct_model, adapter=None)

    def suggestion_key(self) -> tuple[Any, ...]:
        """The settings besides the model's that shape a suggestion: cached ones are stale when they change."""
        return (self.fim_format, self.max_new_tokens, self.temperature, self.max_context_tokens,
                self.repository_context, self.known_names, self.copy_from_prompt, self.multiline)

    def prompt_budget(self, backend: Backend) -> int:
        """context_budget for this backend (its context length; the larger default on a GPU)."""
        return self.context_budget(backend.context_length, backend.placement.device == "cuda")

    def context_budget(self, context_length: int, on_gpu: bool) -> int:
        """Prompt budget in tokens: the setting (or the automatic default) capped by what the model
        can take with room for the generated tokens."""
        wanted = self.max_context_tokens or (16384 if on_gpu else 2048)
        room = max(context_length - self.max_new_tokens - 8, 64)
        return max(min(wanted, room), 64)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


CAMEL_KEYS = {_camel(f.name): f.name for f in fields(Settings)}


def _optional_path(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a path string or null")
    return os.path.expanduser(value)


def _device(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be one of {', '.join(DEVICES)} or cuda:N")
    value = value.strip().lower()
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError(f"must be one of {', '.join(DEVICES)} or cuda:N")


def _dtype(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in DTYPE_ALIASES:
        return DTYPE_ALIASES[value.strip().lower()]
    raise ValueError("must be auto, bfloat16, float16 or float32")


def _choice(*choices: str):
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ValueError(f"must be one of {', '.join(choices)}")

    return parse


def _int_range(lo: int, hi: int, allow_none: bool = False):
    def parse(value: Any) -> int | None:
        if value is None and allow_none:
            return None
        # JSON has no integers of its own: accept 64.0 but not 64.5, true or "64".
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ValueError(f"must be an integer from {lo} to {hi}")
        if not lo <= int(value) <= hi:
            raise ValueError(f"must be from {lo} to {hi}")
        return int(value)

    return parse


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("must be a number from 0 to 2")
    if not 0.0 <= value <= 2.0:
        raise ValueError("must be from 0 to 2")
    return float(value)


def _backend(value: Any) -> str:
    if isinstance(value, str):
        value = value.strip()
        if value.lower() == "local" or value == "":
            return "local"
        if value.startswith(("http://", "https://")):
            return value
    raise ValueError('must be "local" or an http(s):// URL of an OpenAI-compatible server')


def _optional_text(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string or null")
    return value.strip()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def _optional_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError("must be true, false or null")


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise ValueError("must be a list of glob patterns")


PARSERS = {
    "model": _optional_path,
    "adapter": _optional_path,
    "device": _device,
    "dtype": _dtype,
    "quantization": _choice("none", "int8", "int4"),
    "kv_cache_dtype": _choice(*KV_CACHE_DTYPES),
    "fim_format": _choice("spm", "psm"),
    "max_context_tokens": _int_range(MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS, allow_none=True),
    "max_new_tokens": _int_range(1, 2048),
    "temperature": _temperature,
    "backend": _backend,
    "enable": _bool,
    "repository_context": _bool,
    "known_names": _bool,
    "copy_from_prompt": _bool,
    "prefetch_after_accept": _bool,
    "multiline": _choice("auto", "always", "never"),
    "exclude": _patterns,
    "speculative_decoding": _bool,
    "cuda_graphs": _bool,
    "compile_decode": _choice(*COMPILE_DECODE_MODES),
    "kv_cache_mb": _int_range(16, 1 << 20),
    "instruct_model": _optional_path,
    "instruct_max_new_tokens": _int_range(16, 4096),
    "instruct_capable": _optional_bool,
    "api_key": _optional_text,
    "remote_model": _optional_text,
}


def unwrap_section(raw: Any) -> Any:
    """Accept both `{"codellama": {...}}` and the bare section."""
    if isinstance(raw, dict) and isinstance(raw.get("codellama"), dict):
        return raw["codellama"]
    return raw


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a client's `codellama` object, and the problems to show the user.

    Keys absent from `raw` keep their value from `base` (defaults when None); invalid keys fall back
    to the default. Unknown keys are ignored (clients may send their own UI settings)."""
    base = base or Settings()
    raw = unwrap_section(raw)
    if raw is None:
        return base, []
    if not isinstance(raw, dict):
        return base, ["codellama settings must be an object; using the previous settings"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        name = CAMEL_KEYS.get(key)
        if name is None:
            continue
        try:
            changes[name] = PARSERS[name](value)
        except ValueError as exc:
            changes[name] = getattr(Settings(), name)
            problems.append(f"Setting codellama.{key} = {value!r} {exc}; using the default.")
    return replace(base, **changes), problems
