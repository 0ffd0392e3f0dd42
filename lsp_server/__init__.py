"""The Code Llama language server: LSP 3.18 inline completions over the local engine."""

__version__ = "0.1.0"
