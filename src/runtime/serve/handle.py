"""Ray's module path ``serve.handle``: the handle and response types of ``runtime.serve``."""

from ._handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"]
