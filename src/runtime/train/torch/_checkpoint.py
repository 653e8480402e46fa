"""TorchCheckpoint: a Checkpoint holding a torch model (``model.pt``), as Ray's."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from runtime.train._checkpoint import Checkpoint


class TorchCheckpoint(Checkpoint):
    """A :class:`~runtime.train.Checkpoint` of a torch model or state dict, in ``model.pt``.

    Example::

        ckpt = TorchCheckpoint.from_state_dict(model.state_dict())
        train.report({"loss": loss}, checkpoint=ckpt)
        ...
        model = TorchCheckpoint(result.checkpoint.path).get_model(make_model())
    """

    MODEL_FILENAME = "model.pt"

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any]) -> TorchCheckpoint:
        """A checkpoint of ``state_dict`` (saved with ``torch.save``) in a new folder."""
        import torch

        if not isinstance(state_dict, dict):
            raise TypeError(f"from_state_dict needs a dict, got {type(state_dict).__name__}")
        path = tempfile.mkdtemp(prefix="runtime-ckpt-")
        torch.save(state_dict, os.path.join(path, cls.MODEL_FILENAME))
        return cls(path)

    @classmethod
    def from_model(cls, model: Any) -> TorchCheckpoint:
        """A checkpoint of a whole ``torch.nn.Module`` (DDP's wrapper is taken off)."""
        import torch

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"from_model needs a torch.nn.Module, got {type(model).__name__}")
        model = getattr(model, "module", model)
        path = tempfile.mkdtemp(prefix="runtime-ckpt-")
        torch.save(model, os.path.join(path, cls.MODEL_FILENAME))
        return cls(path)

    def get_model(self, model: Any = None) -> Any:
        """The model: the saved module, or ``model`` with the saved state dict loaded (a
        ``module.`` prefix from a DDP-wrapped model is removed).

        Raises:
            ValueError: the checkpoint holds a state dict and no ``model`` was given.
        """
        import torch

        with self.as_directory() as d:
            saved = torch.load(os.path.join(d, self.MODEL_FILENAME), weights_only=False)
        if isinstance(saved, torch.nn.Module):
            if model is not None:
                model.load_state_dict(saved.state_dict())
                return model
            return saved
        if model is None:
            raise ValueError(
                "this checkpoint holds a state dict: pass the model to load it into, "
                "get_model(make_model())"
            )
        state = {k.removeprefix("module."): v for k, v in saved.items()}
        model.load_state_dict(state)
        return model
