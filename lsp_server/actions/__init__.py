"""Instruct code actions (explain, document, fix, write tests, ask) on a selection.

- prompts.py: the text side (which code an action works on, its prompt, how its answer is read).
- service.py: what the client may run where (offered actions, their refusals) and the generation.
- delivery.py: a run for the client (model choice, cancellable progress, edit or answer shown).
"""
