"""Exit when the editor that started the server is gone (LSP's `processId`): an editor that crashes
sends no shutdown, and may leave the pipes open in a child; a server left behind holds the model's
memory."""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)


def watch_parent(pid: int, every_s: float = 5.0) -> None:
    """Check every `every_s` seconds, on a daemon thread, that process `pid` is alive; end this
    process at once when it is not."""
    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.warning("parent process %s is gone; exiting", pid)
                os._exit(0)
            except OSError:
                return  # not ours to watch (permissions): stop checking

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()
