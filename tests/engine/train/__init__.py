"""Tests of the training module (engine/train/)."""
