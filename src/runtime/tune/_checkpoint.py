"""Tune's Checkpoint is the one shared by the libraries (``runtime.libs.checkpoint``)."""

from runtime.libs.checkpoint import _DICT_FILE, Checkpoint

__all__ = ["_DICT_FILE", "Checkpoint"]
