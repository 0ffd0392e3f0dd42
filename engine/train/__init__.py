"""On-device training: corpus collection, FIM data, the trainer loop, LoRA adapters.

Modules: sources (which files to train on), fim (the fill-in-the-middle transform), data (token
streams cached on disk), spm (tokenizer training), trainer (the loop), lora (adapters), cli.
"""
