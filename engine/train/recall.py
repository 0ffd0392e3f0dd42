"""Long-range recall documents: real code with small definitions planted in it, asked about at the end.

A small model trained on files concatenated one after another rarely needs anything from thousands of
tokens back, so it never learns to look far: the default model answered the paper's key-retrieval
question with 0 % accuracy at 2K tokens. These documents give it that need. Each is exactly `n`
tokens of real training code (lines taken in order, from a random place in the corpus) with two to
five definitions planted at random line boundaries, then a question about each of them:

    ... real code ...
    def read_limit_bytes() -> int:          class WindowFormat:          TIMEOUT_LINES = 'cursor'
        return 4821                             offset = 17
    ... real code ...
    assert read_limit_bytes() == 4821
    assert WindowFormat.offset == 17
    print(TIMEOUT_LINES)  # 'cursor'

Names are made of words from the code itself, values are numbers or short strings, and the kinds,
docstrings and question forms vary, so what is learnt is "find the definition of this name and copy
its value", not one template. The evaluation's key function (engine/evaluate/keys.py: its name, its
docstring, its held-out filler files) never occurs here. A share of the documents is laid out as an
SPM infilling prompt whose middle is the last answer: the way the language server asks for a value
that is defined in the repository context.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.evaluate.keys import KEY_FUNCTION, CodeFiller
from engine.tokenizer import Tokenizer
from engine.train.sources import SourceFile

EVAL_NAME = KEY_FUNCTION.split("(")[0].removeprefix("def ")  # never planted: the evaluation asks for it
WORD = re.compile(r"\b[a-z][a-z]{2,11}\b")


@dataclass
class Planted:
    definition: str  # whole lines, ending in a newline
    question: str  # the question line up to the answer
    answer: str  # what follows the question on its line


class Planter:
    """Random definitions and the questions about them, named with words of the real code."""

    def __init__(self, words: Sequence[str], rng: random.Random) -> None:
        self.words = [w for w in dict.fromkeys(words) if w not in ("def", "class", "return", "assert")]
        if len(self.words) < 20:
            raise ValueError("recall documents need the words of some real code: too few words")
        self.rng = rng

    def _name(self, parts: int) -> str:
        name = "_".join(self.rng.choice(self.words) for _ in range(parts))
        return name if name != EVAL_NAME else name + "_value"

    def _value(self) -> str:
        r = self.rng
        kind = r.random()
        if kind < 0.65:
            digits = r.choice((1, 2, 2, 2, 3, 3, 4, 5))
            return str(r.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1))
        if kind < 0.9:
            return repr(self._name(r.randint(1, 2)))
        return f"{r.randint(0, 99)}.{r.randint(0, 999)}"

    def _docstring(self, indent: str) -> str:
        if self.rng.random() < 0.5:
            return ""
        text = " ".join(self.rng.choice(self.words) for _ in range(self.rng.randint(2, 8))).capitalize()
        return f'{indent}"""{text}."""\n'

    def plant(self) -> Planted:
        r, value = self.rng, self._value()
        kind = r.randrange(4)
        if kind == 0:  # a function returning a constant
            name = self._name(r.randint(1, 3))
            typ = "str" if value.startswith("'") else "float" if "." in value else "int"
            args = r.choice(("", "", "self", "cls"))
            head = f"def {name}({args}) -> {typ}:\n" if r.random() < 0.7 else f"def {name}({args}):\n"
            definition = head + self._docstring("    ") + f"    return {value}\n"
            call = f"{name}()" if not args else f"obj.{name}()"
            question = r.choice((f"assert {call} == ", f"self.assertEqual({call}, ", f"print({call})  # "))
        elif kind == 1:  # a module constant
            name = self._name(r.randint(1, 3)).upper()
            definition = f"{name} = {value}\n"
            question = r.choice((f"assert {name} == ", f"print({name})  # ", f"self.assertEqual({name}, "))
        elif kind == 2:  # a class attribute
            cls = "".join(w.capitalize() for w in self._name(r.randint(1, 2)).split("_"))
            attr = self._name(r.randint(1, 2))
            definition = f"class {cls}:\n" + self._docstring("    ") + f"    {attr} = {value}\n"
            question = r.choice((f"assert {cls}.{attr} == ", f"assert {cls}().{attr} == "))
        else:  # an entry of a dict literal
            name, key = self._name(r.randint(1, 2)), self._name(1)
            other = f"{self._name(1)!r}: {self._value()}"
            entries = [f"{key!r}: {value}", other] if r.random() < 0.5 else [other, f"{key!r}: {value}"]
            definition = f"{name} = {{{', '.join(entries)}}}\n"
            question = f"assert {name}[{key!r}] == "
        if question.startswith("self.assertEqual("):
            return Planted(definition, question, value + ")")
        return Planted(definition, question, value)


@dataclass
class RecallDocument:
    tokens: list[int]
    planted: list[Planted]  # in the order of their definitions
    questions: list[Planted]  # in the order they are asked
    spm: bool


class RecallDocuments:
    """Recall documents of an exact token length, from the lines of real code files."""

    def __init__(self, tok: Tokenizer, files: Sequence[SourceFile], seed: int, spm_rate: float = 0.3) -> None:
        self.tok = tok
        self.filler = CodeFiller(tok, files)
        self.rng = random.Random(seed)
        words = WORD.findall("".join(f.text[:20000] for f in files[:2000]))
        self.planter = Planter(words, self.rng)
        self.spm_rate = spm_rate

    def document(self, n: int, tries: int = 20) -> RecallDocument:
        """Exactly n tokens (a few hundred at least): BOS, code with planted definitions, questions, EOS; or the SPM
        layout of the same, whose middle is the last answer. A draw whose fixed parts leave no room for
        code (an SPM suffix made of a corpus's rare very long lines) is drawn again."""
        for _ in range(tries):
            doc = self._draw(n)
            if doc is not None:
                return doc
        raise ValueError(f"a recall document needs more than {n} tokens")

    def _draw(self, n: int) -> RecallDocument | None:
        r, tok = self.rng, self.tok
        planted = [self.planter.plant() for _ in range(r.randint(2, 5))]
        questions = planted[:]
        r.shuffle(questions)
        spm = r.random() < self.spm_rate and tok.can_infill
        qa = [tok.encode_infill(p.question + p.answer + "\n") for p in questions]
        defs = [tok.encode_infill("\n" + p.definition + "\n") for p in planted]
        if spm:  # the last question's answer is the middle; three lines of real code are the suffix
            last = questions[-1]
            qa[-1] = tok.encode_infill(last.question)
            lines = self.filler.lines
            # Each line from its own random place (the draw, offset by i, is what the shipped model saw).
            suffix = "".join(lines[(r.randrange(len(lines)) + i) % len(lines)] for i in range(3))
            ids = tok.infill_ids()
            head = [tok.bos_id, ids.prefix, ids.suffix] + tok.encode_infill(suffix) + [ids.middle]
            tail = tok.encode_infill(last.answer + "\n") + [ids.eot]
        else:
            head, tail = [tok.bos_id], [tok.eos_id]
        fixed = len(head) + sum(map(len, qa)) + sum(map(len, defs)) + len(tail)
        budget = n - fixed
        if budget < 16:
            return None
        code: list[list[int]] = []
        start, total = r.randrange(len(self.filler.lines)), 0
        while total < budget:
            code.append(self.filler.line_ids(start + len(code)))
            total += len(code[-1])
        surplus = total - budget  # cut from the front: the window opens inside real code
        while surplus >= len(code[0]):
            surplus -= len(code.pop(0))
        code[0] = code[0][surplus:]
        # Definitions at random line boundaries, in order of depth; inserted from the deepest up, so
        # the line indices of the ones above stay valid.
        slots = sorted(r.randrange(len(code) + 1) for _ in planted)
        for slot, definition in reversed(list(zip(slots, defs, strict=True))):
            code.insert(slot, definition)
        tokens = head + [t for piece in code + qa for t in piece] + tail
        assert len(tokens) == n, (len(tokens), n)
        return RecallDocument(tokens, planted, questions, spm)


def mix_windows(
    real: np.ndarray, recall: RecallDocuments, seq_len: int, n_windows: int, recall_share: float, seed: int,
) -> tuple[np.ndarray, dict[str, int]]:
    """A stream of n_windows windows of seq_len tokens, each either the next slice of the real stream or
    filled with recall documents (one to three, of random lengths), so that no recall document is cut
    by a window's edge (a question whose definition was cut off would teach the model to guess)."""
    rng = random.Random(seed)
    out = np.empty(n_windows * seq_len, dtype=real.dtype)
    counts = {"real_windows": 0, "recall_windows": 0, "recall_documents": 0}
    pos = 0
    for w in range(n_windows):
        window = out[w * seq_len : (w + 1) * seq_len]
        if rng.random() < recall_share:
            filled = 0
            while filled < seq_len:
                left = seq_len - filled
                n = left if left < 1024 or rng.random() < 0.4 else rng.randint(512, left - 512)
                window[filled : filled + n] = recall.document(n).tokens
                filled += n
                counts["recall_documents"] += 1
            counts["recall_windows"] += 1
        else:
            if pos + seq_len > len(real):
                pos = 0
            window[:] = real[pos : pos + seq_len]
            pos += seq_len
            counts["real_windows"] += 1
    return out, counts
