"""What the server hands the local engine to copy from beyond the prompt (CompletionRequest.workspace)."""

from __future__ import annotations

from lsp_server.completion import workspace_files
from lsp_server.context.gather import Request
from lsp_server.context.prompt import in_memory_index
from lsp_server.settings import Settings

KEY = "sk-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"  # the shape of an API key (privacy.py)


def test_the_index_files_go_to_the_engine_with_the_file_at_the_cursor_and_secrets_redacted():
    index = in_memory_index({"paths.py": "HOME = '/srv/tool'\n", "keys.py": f"API_KEY = '{KEY}'\n"})
    files = workspace_files(Request("app.py", "x = ", "python", 4, 1), index, Settings())
    assert files is not None and files.current == "app.py" and files.generation == (index.serial, index.generation)
    # A rebuilt index of the same size is another generation: the engine reads its files again.
    assert in_memory_index({"a.py": "", "b.py": ""}).generation == index.generation
    assert workspace_files(Request("app.py", "x = ", "python", 4, 1), in_memory_index({"a.py": "", "b.py": ""}),
                           Settings()).generation != files.generation
    assert files.texts() == {"paths.py": "HOME = '/srv/tool'\n", "keys.py": f"API_KEY = '{KEY}'\n"}
    assert KEY not in files.prepare(files.texts()["keys.py"])
    index.put("more.py", "y = 1\n")  # the snapshot is read when the engine asks, at the index's newest
    assert "more.py" in files.texts()


def test_nothing_beyond_the_prompt_without_repository_context_or_copying_or_for_a_file_outside_the_workspace():
    index = in_memory_index({"paths.py": "HOME = '/srv/tool'\n"})
    snap = Request("app.py", "x = ", "python", 4, 1)
    assert workspace_files(snap, index, Settings(repository_context=False)) is None
    assert workspace_files(snap, index, Settings(copy_from_prompt=False)) is None
    assert workspace_files(Request("/tmp/x.py", "x = ", "python", 4, 1, isolated=True), index, Settings()) is None
    assert workspace_files(snap, None, Settings()) is None
