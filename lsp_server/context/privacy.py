"""What of the user's files may reach a prompt (pure functions).

The workspace index already leaves out git-ignored, secret-named and secret-holding files
(engine/sourcefiles.py). Open buffers come from the editor instead, and any file can be open: these
rules hold them to the same standard, and keep secrets typed into the current file out of its prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.sourcefiles import SECRET_CONTENT, is_secret_path

REDACTED = "<redacted>"


def holds_secret(text: str) -> bool:
    """True when the text contains a private key, an AWS/GitHub/Slack/OpenAI... key or token."""
    return SECRET_CONTENT.search(text) is not None


def redact_secrets(text: str) -> str:
    """The text with every key or token it holds replaced by `<redacted>`."""
    return SECRET_CONTENT.sub(REDACTED, text)


def may_share(path: str, text: str, indexable: Callable[[str], bool] | None) -> bool:
    """Whether an open document inside the workspace may serve as context for another one: only
    when the index would take it from disk (`indexable`: not git-ignored, not secret by name,
    vendored or generated; without an index, not secret by name) and it holds no secret."""
    allowed = indexable(path) if indexable is not None else not is_secret_path(path)
    return allowed and not holds_secret(text)


# `apiKey: "..."`, `'api_key': '...'`, `apiKey=...` in whatever a log line prints (a settings dict,
# a repr of the initialize params), and any bearer token.
_KEY_VALUE = re.compile(r"""(api_?key['"]?\s*[:=]\s*)(?:'[^']*'|"[^"]*"|[^\s,)}]+)""", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact_log_line(text: str) -> str:
    """A log line without API keys (the remote backend's, under any spelling) or tokens."""
    text = _KEY_VALUE.sub(lambda m: m.group(1) + repr(REDACTED), text)
    return redact_secrets(_BEARER.sub(lambda m: m.group(1) + REDACTED, text))
