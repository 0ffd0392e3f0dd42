"""End to end: the workspace index follows the settings (lsp_server/indexing.py, through the real server
and the default model): excluding a folder rebuilds the index without it, and the reindex command
rebuilds it under the same rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types as T

from . import lsp_client as lc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def test_excluding_a_folder_drops_its_files_from_the_index_and_reindexing_keeps_them_out(tmp_path: Path):
    for rel in ("lib/shapes.py", "lib/units.py", "legacy/old_shapes.py", "legacy/old_units.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"def {Path(rel).stem}_area(width, height):\n    return width * height\n")
    client = await lc.start(tmp_path, {"maxNewTokens": 8})
    try:
        await lc.wait_for(client, lambda s: s["state"] == "ready" and not s["indexing"] and s["indexedFiles"] == 4)
        client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
            settings={"codellama": {"maxNewTokens": 8, "exclude": ["legacy/"]}}))
        await lc.wait_for(client, lambda s: not s["indexing"] and s["indexedFiles"] == 2, timeout=120)
        (tmp_path / "lib" / "volumes.py").write_text("def volume(width, height, depth):\n    return width * height * depth\n")
        await lc.request(client, T.WORKSPACE_EXECUTE_COMMAND, T.ExecuteCommandParams("codellama.reindexWorkspace"))
        status = await lc.wait_for(client, lambda s: not s["indexing"] and s["indexedFiles"] == 3, timeout=120)
        assert status["state"] == "ready"
    finally:
        await client.shutdown_session()
        await client.stop()
