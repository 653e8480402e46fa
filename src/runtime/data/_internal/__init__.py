"""Ray's ``ray.data._internal`` paths that documented examples import (only those)."""
