"""SentencePiece tokenizer with Code Llama's infilling pieces and mid-stream encoding."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from sentencepiece import SentencePieceProcessor, sentencepiece_model_pb2

INFILL_PIECES = ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")


def encodable(text: str) -> str:
    """`text` with lone UTF-16 surrogates (JSON may carry "\\ud800"; sentencepiece refuses them) as
    U+FFFD, which has the same length in UTF-8, UTF-16 and code points."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


class InfillIds(NamedTuple):
    prefix: int
    suffix: int
    middle: int
    eot: int


class TokenizerError(ValueError):
    pass


class Tokenizer:
    """Wraps a `tokenizer.model`. Ids of the infilling pieces are looked up by piece, never by number."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        try:
            proto_bytes = self.path.read_bytes()
            self.sp = SentencePieceProcessor(model_proto=proto_bytes)
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{self.path}: not a readable sentencepiece model ({exc})") from exc
        # A second processor without the implicit leading space, for text that continues mid-stream
        # (the suffix, the generated middle). Same vocabulary and merges, one normaliser flag changed.
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(proto_bytes)
        proto.normalizer_spec.add_dummy_prefix = False
        proto.denormalizer_spec.add_dummy_prefix = False
        self._sp_mid = SentencePieceProcessor(model_proto=proto.SerializeToString())

        self.vocab_size: int = self.sp.get_piece_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        self.pad_id: int = self.sp.pad_id()
        self.prefix_id, self.suffix_id, self.middle_id, self.eot_id = (
            self._piece_id(p) for p in INFILL_PIECES
        )

    def _piece_id(self, piece: str) -> int | None:
        i = self.sp.piece_to_id(piece)
        return None if i == self.sp.unk_id() and piece != self.sp.id_to_piece(i) else i

    @property
    def can_infill(self) -> bool:
        return None not in (self.prefix_id, self.suffix_id, self.middle_id, self.eot_id)

    def infill_ids(self) -> InfillIds:
        """The four infilling pieces' ids; ValueError for a model without them (Code Llama – Python)."""
        if self.prefix_id is None or self.suffix_id is None or self.middle_id is None or self.eot_id is None:
            raise ValueError(f"{self.path}: this model has no infilling pieces; use left_to_right_prompt")
        return InfillIds(self.prefix_id, self.suffix_id, self.middle_id, self.eot_id)

    def special_ids(self) -> set[int]:
        """BOS, EOS and the infilling pieces the model has: ids no source text encodes to."""
        pieces = (self.prefix_id, self.suffix_id, self.middle_id, self.eot_id)
        return {self.bos_id, self.eos_id} | {i for i in pieces if i is not None}

    def stop_ids(self) -> set[int]:
        """Ids that end a generation: EOS, and <EOT> where the model has it."""
        return {self.eos_id} | ({self.eot_id} if self.eot_id is not None else set())

    # ---- encode / decode ----------------------------------------------------------------------

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Plain SentencePiece encoding: adds the implicit leading space, like the start of a document."""
        ids: list[int] = self.sp.encode(encodable(text))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_infill(self, text: str) -> list[int]:
        """Encode text that continues mid-stream: no implicit leading space is added."""
        return list(self._sp_mid.encode(encodable(text)))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def decode_infill(self, ids: list[int]) -> str:
        """Decode without dropping a leading space (inverse of `encode_infill`)."""
        return self._sp_mid.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def piece_texts(self) -> list[str]:
        """The text each id stands for mid-stream (▁ as a space, byte pieces as their byte when they
        are a whole character). Used by token healing to find ids whose text extends a given string."""
        texts = []
        for i in range(self.vocab_size):
            if self.sp.is_control(i) or self.sp.is_unknown(i):
                texts.append("")
            elif self.sp.is_byte(i):
                byte = int(self.sp.id_to_piece(i)[3:5], 16)
                texts.append(chr(byte) if byte < 0x80 else "")
            else:
                texts.append(self.sp.id_to_piece(i).replace("▁", " "))
        return texts
