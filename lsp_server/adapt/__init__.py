"""On-device adaptation to one workspace: train on the server's own prompts for the workspace's files,
measure the gain on files held out, write the adapter and its report (`python -m lsp_server.adapt`)."""
