"""Ray's private module path ``ray._raylet``, for the few public classes programs import
from it (``from ray._raylet import ObjectRefGenerator``); nothing else of Ray's internals
is here."""

from runtime import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

__all__ = ["DynamicObjectRefGenerator", "ObjectRef", "ObjectRefGenerator"]
