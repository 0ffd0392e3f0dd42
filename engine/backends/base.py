"""The one interface between the language server and whatever produces completions.

The in-process local engine (`engine.backends.local.LocalBackend`) and the remote OpenAI-compatible
client both implement `Backend`; the language server only ever sees this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FimFormat = Literal["psm", "spm"]
# The dtypes a model may run in, by every name users write them (-> torch's name).
DTYPE_NAMES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}
KV_CACHE_DTYPES = ("auto", "bfloat16", "float32", "int8")  # "auto": see engine/backends/local.py's resolve_kv_dtype
# How the local engine runs one-token CPU decode steps: "auto" compiles them in the background
# (engine/compiled_decode.py), "off" keeps them eager.
COMPILE_DECODE_MODES = ("auto", "off")
StopReason = Literal["eot", "eos", "max_tokens", "stop_string", "cancelled", "context_full"]


@dataclass(frozen=True)
class WorkspaceFiles:
    """The workspace's indexed files, for a backend that copies from beyond the prompt (the local
    one: engine/prompt_copy.py). `texts()` reads them (path -> text) and is called only when
    `generation` (which index, and its count of changes) moved; `current` is the file at the cursor
    (left out: its live text is in the prompt); `prepare` turns a file's text into what may be copied
    (secrets redacted)."""

    texts: Callable[[], Mapping[str, str]]
    generation: tuple[int, int]
    current: str | None = None
    prepare: Callable[[str], str] = str


@dataclass
class CompletionRequest:
    """A fill-in-the-middle request. `prefix` already holds any repository context the caller packed
    in front of the text before the cursor (as path-headed comments); `suffix` is the text after it."""

    prefix: str
    suffix: str = ""
    fim_format: FimFormat = "spm"
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # Number of prefix tokens to hold back and re-generate under a constraint (token healing).
    token_healing: bool = True
    # Prompt-lookup speculative decoding where the backend has it (same output, fewer decode passes).
    speculative: bool = True
    # The names the completion's first identifier must be one of, relative to the cursor (after
    # `self.na` with members name and nav: "me", "v"); None for no such rule. The local backend
    # keeps to them while decoding (engine/name_choice.py); a remote one cannot, and ignores them.
    name_choices: tuple[str, ...] | None = None
    # Names the completion leans toward when no rule above applies, relative to the cursor like
    # name_choices: at the start of an expression, the names the file imports from its own package
    # (`raise |` in a file that imports ValidationError from .exceptions: "ValidationError"; `raise
    # Valid|`: "ationError"). The local backend raises the logits of the pieces that carry the text on
    # toward one by FAVORED_NAME_BONUS (engine/name_choice.py, NameChoices.lean); a remote one ignores them.
    favored_names: tuple[str, ...] | None = None
    # Mix into each token's choice what followed the same tokens elsewhere in the prompt (the file and
    # the repository snippets): the local backend's engine/prompt_copy.py; a remote one ignores it.
    prompt_copy: bool = True
    # With prompt_copy: the workspace's other files, looked up beside the prompt.
    workspace: WorkspaceFiles | None = None


@dataclass
class InstructRequest:
    """A Code Llama – Instruct query: one user turn with an optional system prompt."""

    user: str
    system: str | None = None
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Timings:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_ms: float = 0.0
    generated_tokens: int = 0
    total_ms: float = 0.0
    decode_passes: int = 0  # forward passes after the first token (fewer than tokens with speculation)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(self.generated_tokens - 1, 0)  # the first token comes out of prefill
        return 0.0 if self.decode_ms <= 0 else 1000.0 * steps / self.decode_ms


@dataclass
class Completion:
    text: str
    stop_reason: StopReason
    prompt_tokens: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # generated ids, stop token excluded
    timings: Timings = field(default_factory=Timings)


# Called between decode steps; returning True stops generation with stop_reason "cancelled".
ShouldStop = Callable[[], bool]
# Receives the text generated so far (the whole of it, not a delta) after each decode step.
OnText = Callable[[str], None]


@dataclass(frozen=True)
class Placement:
    """Where and how a backend computes (what the status bar shows)."""

    device: str  # "cpu", "cuda", or "remote"
    dtype: str | None = None  # "bfloat16", ...; None: not known (a remote server)
    quantization: str | None = None  # the weights': "none", "int8", "int4"
    kv_cache_dtype: str | None = None  # "bfloat16", "int8", ...
    # How one-token decode steps run: "eager", "native", "compiling", "compiled" (CPU), "CUDA graphs"; None:
    # not known
    decode_step: str | None = None


@dataclass(frozen=True)
class InstructCapability:
    """Whether a backend's model follows instructions (Code Llama – Instruct prompts: what code actions
    send), and what decided it. A local model says so in its checkpoint (engine/instruct.py); a remote
    server's model is that server's choice, assumed to."""

    capable: bool
    why: str  # a clause for the user: 'its config.json says "instruct": false'


class BackendError(RuntimeError):
    """A problem the user must act on (model missing, server unreachable); message is user-facing."""


class OutOfMemory(BackendError):
    """The device ran out of memory: loading the model, or a prompt longer than what is free."""


class BadCheckpoint(BackendError):
    """The model or adapter directory cannot be loaded (missing, truncated, mismatched)."""


class Unreachable(BackendError):
    """A remote server did not answer, or kept failing, through every retry."""


@runtime_checkable
class Backend(Protocol):
    # Called with the new `state` whenever it changes (from any thread); set by the language server.
    on_state: Callable[[str], None] | None
    # Messages to show the user once, after loading (e.g. a remote server over plain http).
    warnings: list[str]

    @property
    def description(self) -> str:
        """Short human-readable name, e.g. 'local: default-model (cpu, bfloat16)'."""
        ...

    @property
    def placement(self) -> Placement:
        """Where and how it computes, for the status."""
        ...

    @property
    def instruct_capability(self) -> InstructCapability:
        """Whether its model follows instructions, and why (the language server offers code actions on
        it only when it does, unless the user's codellama.instructCapable says otherwise)."""
        ...

    @property
    def state(self) -> str:
        """How the last request went: "ready", or "retrying: ..." / "error: ..." (a remote server)."""
        ...

    def cache_bytes(self) -> int | None:
        """Bytes its KV caches hold in this process (None: they live elsewhere)."""
        ...

    @property
    def context_length(self) -> int:
        """Most prompt + generated tokens the backend can take."""
        ...

    @property
    def can_infill(self) -> bool:
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the middle of a prompt (no BOS, no implicit leading space)."""
        ...

    def complete(self, request: CompletionRequest, should_stop: ShouldStop | None = None,
                 on_text: OnText | None = None) -> Completion:
        ...

    def instruct(self, request: InstructRequest, should_stop: ShouldStop | None = None,
                 on_text: OnText | None = None) -> Completion:
        ...

    def warm(self, request: CompletionRequest, should_stop: ShouldStop | None = None) -> None:
        """Prefill the prompt of `request` so a later `complete` with a longer prompt reuses its KV.
        May do nothing (remote backends). Must return promptly once `should_stop()` is True."""
        ...

    def close(self) -> None:
        ...
