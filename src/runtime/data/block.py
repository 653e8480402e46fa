"""Ray's ``ray.data.block`` module path: ``BlockMetadata`` (a block is a ``pyarrow.Table``)."""

from ._block import Block, BlockMetadata

__all__ = ["Block", "BlockMetadata"]
