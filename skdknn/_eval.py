"""Eval mode for networks that several threads share.

The DkNN reads a network in eval mode (BatchNorm with its running statistics,
Dropout off) whatever mode the user left it in. A network is often shared: by the
threads of a grid search (a prefit net in a ``FrozenEstimator`` is never cloned),
by a classifier and the attacks on it, by a Dask worker's threads. Saving the mode,
switching to eval and restoring the saved mode around each forward pass is wrong
there: one thread restores training mode while another is inside a forward pass,
which then normalises with the batch's statistics, updates the running statistics
and runs Dropout, so its answers silently change. :func:`eval_mode` counts the
blocks open on a network instead, across threads: the first switches it to eval,
the last restores every submodule's own mode.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


class _Open:
    """The eval-mode blocks open on one network, and the modes to restore."""

    def __init__(self, module: nn.Module) -> None:
        self.count = 0
        # every submodule's own mode: a user's frozen BatchNorm inside a network
        # in training mode stays frozen (module.train(True) would unfreeze it)
        self.modes = [(sub, sub.training) for sub in module.modules()]

    def restore(self) -> None:
        for sub, training in self.modes:
            sub.training = training


_LOCK = threading.Lock()
_OPEN: weakref.WeakKeyDictionary[nn.Module, _Open] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``module`` in eval mode, then restore its modes.

    Thread-safe and re-entrant: while any thread is inside an ``eval_mode`` block
    on ``module``, it stays in eval mode; when the last block closes, every
    submodule gets back the mode it had when the first block opened.

    Parameters
    ----------
    module : torch.nn.Module
        The network. Changing its mode from other code while a block is open
        (``module.train()`` in another thread) is not guarded against.

    Yields
    ------
    module : torch.nn.Module
        The same network, in eval mode.
    """
    with _LOCK:
        opened = _OPEN.get(module)
        if opened is None:
            opened = _Open(module)
            try:
                module.eval()
            except BaseException:
                opened.restore()
                raise
            _OPEN[module] = opened
        opened.count += 1
    try:
        yield module
    finally:
        with _LOCK:
            opened.count -= 1
            if opened.count == 0:
                del _OPEN[module]
                opened.restore()
