"""Prompt layouts as pure functions (no I/O, no model): token ids for the local engine, text for a server."""

from __future__ import annotations

from engine.tokenizer import Tokenizer


def psm_prompt(tok: Tokenizer, prefix: str, suffix: str) -> list[int]:
    """Prefix-suffix-middle:  BOS <PRE> {encode(prefix)} <SUF> {encode_infill(suffix)} <MID>

    The prefix is encoded like the start of a document (implicit leading space, which the
    `▁<PRE>` piece's own space stands for); the suffix continues mid-stream.
    """
    ids = tok.infill_ids()
    return (
        [tok.bos_id, ids.prefix]
        + tok.encode(prefix)
        + [ids.suffix]
        + tok.encode_infill(suffix)
        + [ids.middle]
    )


def spm_prompt(tok: Tokenizer, prefix: str, suffix: str) -> list[int]:
    """Suffix-prefix-middle:  BOS <PRE> <SUF> {encode_infill(suffix)} <MID> {encode(prefix)}

    As in Meta's reference, the prefix keeps its implicit leading space here too. It comes last, so
    typing at the cursor only appends tokens to the prompt (the KV cache of what is before stays valid).
    """
    ids = tok.infill_ids()
    return (
        [tok.bos_id, ids.prefix, ids.suffix]
        + tok.encode_infill(suffix)
        + [ids.middle]
        + tok.encode(prefix)
    )


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


def instruct_prompt_text(user: str, system: str | None = None) -> str:
    """Code Llama – Instruct, one turn, as text without BOS:
    "[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]". The system block is optional; inputs are
    stripped. A remote server receives this text; the local engine encodes it (instruct_prompt)."""
    content = user.strip()
    if system:
        content = f"{B_SYS}{system.strip()}{E_SYS}{content}"
    return f"{B_INST} {content} {E_INST}"


def instruct_prompt(tok: Tokenizer, user: str, system: str | None = None) -> list[int]:
    """BOS + instruct_prompt_text(user, system), encoded."""
    return tok.encode(instruct_prompt_text(user, system), bos=True)


# ---- the same layouts as text, for a server that tokenizes the prompt itself ---------------------

# How the infilling pieces are spelt in prompt text.
PLAIN_MARKERS = "plain"  # "<PRE> {prefix} <SUF>{suffix} <MID>": sentencepiece, Hugging Face tokenizers
PIECE_MARKERS = "piece"  # "▁<PRE>{prefix}▁<SUF>{suffix}▁<MID>": llama.cpp (control tokens by piece text)


def fim_prompt_text(prefix: str, suffix: str, fim_format: str, markers: str = PLAIN_MARKERS) -> str:
    """The text of a Code Llama infilling prompt, without BOS (the server adds it).

    PLAIN tokenizes, with a sentencepiece Llama tokenizer, to exactly psm_prompt / spm_prompt's ids:
    " <PRE>" is the `▁<PRE>` piece, " {prefix}" is encode(prefix) (its implicit leading space), and
    the suffix follows `<SUF>` directly (encode_infill: no space of its own).
    PIECE writes the pieces as llama.cpp matches them. llama.cpp puts a space in front of every run of
    text that follows a control piece (the GGUF's add_space_prefix): right for the prefix (encode(prefix)
    has it), one too many for the suffix. A suffix that starts with a space gives that space up to the
    one llama.cpp adds, which makes the ids exact; so does an empty suffix. Any other suffix reaches the
    model with a space in front (a lone `▁` before a newline, `▁x` for `x`): no text can say otherwise,
    only token ids could.
    """
    if fim_format not in ("psm", "spm"):
        raise ValueError(f"unknown FIM format {fim_format!r} (expected 'psm' or 'spm')")
    if markers == PIECE_MARKERS:
        if suffix.startswith(" ") and len(suffix) > 1:
            suffix = suffix[1:]
        if fim_format == "psm":
            return f"▁<PRE>{prefix}▁<SUF>{suffix}▁<MID>"
        return f"▁<PRE>▁<SUF>{suffix}▁<MID>{prefix}"
    # An empty prefix takes no tokens (sentencepiece adds its implicit space to non-empty text only).
    spaced = f" {prefix}" if prefix else ""
    if fim_format == "psm":
        return f"<PRE>{spaced} <SUF>{suffix} <MID>"
    return f"<PRE> <SUF>{suffix} <MID>{spaced}"

