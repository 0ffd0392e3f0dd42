"""Known names at the cursor: the first name a completion writes is one that exists, on the real
default model, through the local backend, with token healing and with drafts."""

from __future__ import annotations

import pytest

from engine.backends.base import CompletionRequest
from engine.backends.local import load_local_backend
from engine.name_choice import NameChoices, fits, leading_name

# A class whose code calls members the prompt never shows: the model has to invent their names.
PREFIX = (
    "class Ledger:\n"
    "    def __init__(self, rows):\n"
    "        self.rows = rows\n\n"
    "    def settle(self):\n"
    "        total = self."
)


@pytest.fixture(scope="module")
def backend():
    return load_local_backend(device="cpu", dtype="bfloat16")


def _complete(backend, prefix: str, choices: tuple[str, ...] | None, **kw) -> str:
    request = CompletionRequest(prefix=prefix, suffix="\n", max_new_tokens=24, stop=["\n"], name_choices=choices, **kw)
    return backend.complete(request).text


def test_a_name_is_on_its_way_to_a_choice_or_one_of_them_then_something_else():
    names = {"zorbulate_ledger", "rows", ""}
    assert fits("zorb", names) and fits("zorbulate_ledger(", names) and fits("rows[0]", names)
    assert not fits("zorbulate_ledgers", names) and not fits("total(", names)
    assert fits("(self)", names)  # '' is a choice: what is typed is already a whole name
    assert not fits("(self)", {"rows"}) and not fits(" rows", {"rows"})  # a space is not a name
    assert leading_name("get_x(1)") == "get_x"


@pytest.mark.parametrize("speculative", [False, True])
def test_the_first_name_is_one_of_the_choices_and_the_rest_runs_free(backend, speculative):
    free = _complete(backend, PREFIX, None, speculative=speculative)
    assert not free.startswith("zorbulate_ledger")
    for choices in (("zorbulate_ledger",), ("rows", "zorbulate_ledger", "quux_frobnicated")):
        text = _complete(backend, PREFIX, choices, speculative=speculative)
        assert leading_name(text) in choices, (choices, text)


def test_once_a_choice_is_written_and_followed_by_something_else_the_model_runs_free(backend):
    tok = backend.tok
    constrain = NameChoices(backend.healer).constraint("", ["zorbulate_ledger"], tok.stop_ids())
    assert constrain([]) is not None
    assert constrain(tok.encode_infill("zorbul")) is not None  # still inside the name
    assert constrain(tok.encode_infill("zorbulate_ledger(")) is None
    assert constrain(tok.encode_infill("zorbulate_ledger(self")) is None


def test_the_choices_hold_through_token_healing_mid_name(backend):
    """`self.zorb|`: the held-back token is re-spelt, then the name must go on to a choice."""
    text = _complete(backend, PREFIX + "zorb", ("ulate_ledger", "le_count"))
    assert leading_name(text) in ("ulate_ledger", "le_count"), text
    without = _complete(backend, PREFIX + "zorb", None)
    assert leading_name(without) not in ("ulate_ledger", "le_count")


def test_a_whole_name_typed_may_end_or_go_on_to_a_longer_one(backend):
    healer = backend.healer
    choices = NameChoices(healer)
    stop = backend.tok.stop_ids()
    allowed = set(choices.constraint("", ["", "_total"], stop)([]).tolist())
    assert stop <= allowed  # the name may be complete: the model may stop
    texts = healer.texts
    assert all(not texts[i] or not texts[i][0].isalnum() for i in allowed)  # never a new name's letters
    assert any(texts[i] == "_" or texts[i].startswith("_t") for i in allowed)


# A file that imports ValidationError from its own package and has used it once: at `raise |` the
# default model's own first choice is still the builtin.
RAISES = (
    "from .errors import ValidationError\n\n\n"
    "def check_name(value):\n    if not value:\n        raise ValidationError(\"name is required\")\n    return value\n\n\n"
    "def check_age(value):\n    if value < 0:\n        raise "
)


def test_the_leaning_pieces_spell_the_held_back_text_then_start_a_favored_name(backend):
    texts = backend.healer.texts
    leaning = {texts[i] for i in NameChoices(backend.healer).leaning(" ", ["ValidationError", "Leaf"]).tolist()}
    assert {" Valid", " V", " L"} <= leaning  # single characters too: every favored name is reachable
    assert " ValueError" not in leaning and "Valid" not in leaning  # another name; no held-back space
    assert all(t.startswith(" ") and ("ValidationError".startswith(t[1:]) or "Leaf".startswith(t[1:]))
               for t in leaning)


@pytest.mark.parametrize("speculative", [False, True])
def test_a_favored_name_wins_the_first_token_where_the_model_leaned_elsewhere(backend, speculative):
    def complete(favored):
        return backend.complete(CompletionRequest(prefix=RAISES, suffix="\n    return value\n", max_new_tokens=24,
                                                  stop=["\n"], favored_names=favored, speculative=speculative)).text

    assert complete(None).startswith("ValueError")
    assert complete(("ValidationError",)).startswith("ValidationError(")
    # It only leans: a name the model does not want at all stays out.
    assert not complete(("ZorbulatedThing",)).startswith("Zorbulated")


@pytest.mark.parametrize("speculative", [False, True])
def test_inside_a_typed_name_the_rest_of_a_favored_one_wins(backend, speculative):
    """`raise V|`: the model's own choice is `alueError`; the rest of the favored name, relative to the
    cursor as the language server sends it, takes over (through token healing of the typed `V`)."""
    def complete(favored):
        return backend.complete(CompletionRequest(prefix=RAISES + "V", suffix="\n    return value\n", max_new_tokens=24,
                                                  stop=["\n"], favored_names=favored, speculative=speculative)).text

    assert complete(None).startswith("alueError")
    assert complete(("alidationError",)).startswith("alidationError(")


def test_the_lean_goes_on_past_a_shared_first_piece_and_stops_once_the_text_leaves_the_names(backend):
    texts = backend.healer.texts
    ids = {t: i for i, t in enumerate(texts) if t}
    lean = NameChoices(backend.healer).lean(" Va", ["lidationError"], 2.0)
    first, amount = lean([])
    assert amount == 2.0 and ids[" Valid"] in first.tolist()  # the held-back " Va", then the name
    after = lean([ids[" Valid"]])
    assert after is not None and {texts[i] for i in after[0].tolist()} >= {"ation"}  # on toward the name
    assert all("ationError".startswith(texts[i]) or texts[i].startswith("ationError") for i in after[0].tolist())
    assert lean([ids[" Valid"], ids["ed"]]) is None  # `Valided`: no favored name goes on from it
    assert lean([ids[" Valid"]]) is None  # and it stays done
