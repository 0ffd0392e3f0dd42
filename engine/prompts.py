"""Prompt layouts as pure functions over token ids (no I/O, no model)."""

from __future__ import annotations

from engine.tokenizer import Tokenizer


def psm_prompt(tok: Tokenizer, prefix: str, suffix: str) -> list[int]:
    """Prefix-suffix-middle:  BOS <PRE> {encode(prefix)} <SUF> {encode_infill(suffix)} <MID>

    The prefix is encoded like the start of a document (implicit leading space, which the
    `▁<PRE>` piece's own space stands for); the suffix continues mid-stream.
    """
    _require_infill(tok)
    return (
        [tok.bos_id, tok.prefix_id]
        + tok.encode(prefix)
        + [tok.suffix_id]
        + tok.encode_infill(suffix)
        + [tok.middle_id]
    )  # type: ignore[list-item]


def spm_prompt(tok: Tokenizer, prefix: str, suffix: str) -> list[int]:
    """Suffix-prefix-middle:  BOS <PRE> <SUF> {encode_infill(suffix)} <MID> {encode(prefix)}

    As in Meta's reference, the prefix keeps its implicit leading space here too. It comes last, so
    typing at the cursor only appends tokens to the prompt (the KV cache of what is before stays valid).
    """
    _require_infill(tok)
    return (
        [tok.bos_id, tok.prefix_id, tok.suffix_id]
        + tok.encode_infill(suffix)
        + [tok.middle_id]
        + tok.encode(prefix)
    )  # type: ignore[list-item]


def infill_prompt(tok: Tokenizer, prefix: str, suffix: str, fim_format: str) -> list[int]:
    if fim_format == "psm":
        return psm_prompt(tok, prefix, suffix)
    if fim_format == "spm":
        return spm_prompt(tok, prefix, suffix)
    raise ValueError(f"unknown FIM format {fim_format!r} (expected 'psm' or 'spm')")


def left_to_right_prompt(tok: Tokenizer, prefix: str) -> list[int]:
    """For models without infilling pieces (Code Llama – Python, 34B): BOS {encode(prefix)}."""
    return tok.encode(prefix, bos=True)


B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def instruct_prompt(tok: Tokenizer, user: str, system: str | None = None) -> list[int]:
    """Code Llama – Instruct, one turn:  BOS "[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]"

    The system block is optional; inputs are stripped.
    """
    content = user.strip()
    if system:
        content = f"{B_SYS}{system.strip()}{E_SYS}{content}"
    return tok.encode(f"{B_INST} {content} {E_INST}", bos=True)


def _require_infill(tok: Tokenizer) -> None:
    if not tok.can_infill:
        raise ValueError(f"{tok.path}: this model has no infilling pieces; use left_to_right_prompt")
