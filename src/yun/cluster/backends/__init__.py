"""The two `Cluster` backends: `local` (engine processes of this one) and `ray` (Ray actors).

`yun.cluster.backends.ray.RayBackend` is imported from its module, not here: importing Ray takes about a
second and most processes never need it.
"""

from yun.cluster.backends.local import LocalBackend

__all__ = ["LocalBackend"]
