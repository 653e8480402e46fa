"""Ray's ``ray.data.datasource`` module path: the names a custom source imports from there.

Example::

    from runtime.data.datasource import Datasource, ReadTask
"""

from ._block import BlockMetadata
from ._datasource import Datasource, ReadTask

__all__ = ["BlockMetadata", "Datasource", "ReadTask"]
