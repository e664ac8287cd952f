"""Dataset loaders returning image arrays ready for DkNN models.

Every loader returns float32 images of shape ``(n, channels, height, width)``
scaled to [0, 1] and int64 labels, either as a :class:`~sklearn.utils.Bunch`
or, with ``return_X_y=True``, as ``(X, y)``. :func:`load_mnist` works offline
with an embedded 5,000-image sample when called without a directory.
:func:`make_ood_images` makes out-of-distribution inputs shaped like them.
"""

from ._idx import load_idx
from ._mnist import load_fashion_mnist, load_mnist
from ._ood import make_ood_images
from ._svhn import load_svhn

__all__ = [
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "load_svhn",
    "make_ood_images",
]
