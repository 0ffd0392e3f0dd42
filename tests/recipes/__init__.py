"""Tests of the default model's training recipe (recipes/default_model/)."""
