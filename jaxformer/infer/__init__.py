"""Inference: sampling from a checkpoint."""
