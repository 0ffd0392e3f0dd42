"""Local acceptance statistics: what became of the suggestions of this session.

Kept in the server's memory for the session, shown in the status (`acceptance`), never written or
sent anywhere else. Counted:
- shown: inline suggestions answered with text;
- accepted (whole), acceptedWord, acceptedLine: the item's `command` (`codellama.accepted`) run by the
  editor on a full accept, and `codellama.suggestionEvent` sent by the clients for the partial ones;
- dismissed: `codellama.suggestionEvent` from the clients (Esc);
- typedThrough: the user typed characters the suggestion showed (seen by the server when the editor
  asks again while typing, as VS Code does; at most once per suggestion).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACCEPTED = "codellama.accepted"  # the command on each inline item: the editor ran it on a full accept
SUGGESTION_EVENT = "codellama.suggestionEvent"  # a client's word/line accept or dismissal
EVENTS = {"word": "accepted_word", "line": "accepted_line", "dismissed": "dismissed"}


def typed_into(suggestion: str, typed: str) -> bool:
    """Did the user type part of `suggestion` (not nothing, not all of it: that is an accept)?"""
    return 0 < len(typed) < len(suggestion) and suggestion.startswith(typed)


@dataclass
class LastShown:
    uri: str
    start: int  # document offset of the cursor the suggestion was made for
    text: str
    typed_through: bool = False


@dataclass
class AcceptanceStats:
    shown: int = 0
    accepted: int = 0
    accepted_word: int = 0
    accepted_line: int = 0
    dismissed: int = 0
    typed_through: int = 0
    last: LastShown | None = field(default=None, repr=False)

    def record_shown(self, uri: str, start: int, text: str) -> None:
        self.shown += 1
        self.last = LastShown(uri, start, text)

    def record_request(self, uri: str, typed: str) -> None:
        """A new request for `uri`: `typed` is the text from the last suggestion's start to the cursor."""
        last = self.last
        if last is not None and last.uri == uri and not last.typed_through and typed_into(last.text, typed):
            last.typed_through = True
            self.typed_through += 1

    def record_event(self, event: str) -> bool:
        """A client's event ("word", "line", "dismissed"); False for one this server does not know."""
        name = EVENTS.get(event)
        if name is None:
            return False
        setattr(self, name, getattr(self, name) + 1)
        return True

    def record_accepted(self) -> None:
        self.accepted += 1

    def as_status(self) -> dict[str, int]:
        return {"shown": self.shown, "accepted": self.accepted, "acceptedWord": self.accepted_word,
                "acceptedLine": self.accepted_line, "dismissed": self.dismissed, "typedThrough": self.typed_through}
