"""Eval mode for networks that several threads share.

The DkNN reads a network in eval mode (BatchNorm with its running statistics,
Dropout off) whatever mode the user left it in. A network is often shared: by the
threads of a grid search (a prefit net in a ``FrozenEstimator`` is never cloned),
by a classifier and the attacks on it, by a Dask worker's threads, and parts of
it by other networks (a backbone inside two models). Saving the mode, switching to
eval and restoring the saved mode around each forward pass is wrong there: one
thread restores training mode while another is inside a forward pass, which then
normalises with the batch's statistics, updates the running statistics and runs
Dropout, so its answers silently change. :func:`eval_mode` counts the blocks open
on each submodule instead, across threads and networks: a submodule stays in eval
mode while any block that covers it is open, and gets its own mode back when the
last one closes.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


class _Open:
    """A submodule that open blocks cover: how many, and its mode before them."""

    __slots__ = ("count", "training")

    def __init__(self, training: bool) -> None:
        self.count = 0
        self.training = training


_LOCK = threading.RLock()  # a train() override may read a network itself
_OPEN: weakref.WeakKeyDictionary[nn.Module, _Open] = weakref.WeakKeyDictionary()


def _close(module: nn.Module, subs: list[nn.Module]) -> None:
    """Close one block on ``module`` (whose submodules are ``subs``); under _LOCK."""
    released = []
    for sub in subs:
        opened = _OPEN[sub]
        opened.count -= 1
        if opened.count == 0:
            del _OPEN[sub]
            released.append((sub, opened.training))
    if len(released) == len(subs):
        # the whole network is released: its own train() runs, so an override
        # that keeps more state than the flag (fused weights, a frozen BatchNorm
        # of its own) sets it back, then every flag is set to what it was
        try:
            module.train(released[0][1])
        finally:
            for sub, training in released:
                sub.training = training
    else:
        # other blocks still cover the rest (a network that shares submodules
        # with another one being read): only the released flags go back
        for sub, training in released:
            sub.training = training


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``module`` in eval mode, then restore its modes.

    Thread-safe and re-entrant: while any thread is inside an ``eval_mode`` block
    on ``module``, or on another network that shares submodules with it, those
    submodules stay in eval mode; when the last block covering a submodule closes,
    it gets back the mode it had when the first one opened. When the whole network
    is released its ``train()`` method is called with its previous mode (so an
    override's own state follows), then each submodule's flag is set to its
    previous value (a BatchNorm frozen by hand stays frozen).

    Parameters
    ----------
    module : torch.nn.Module
        The network. A mode change made from other code while a block is open
        (``module.train()`` in another thread) is undone when the block closes.

    Yields
    ------
    module : torch.nn.Module
        The same network, in eval mode.
    """
    subs = list(module.modules())
    with _LOCK:
        for sub in subs:
            opened = _OPEN.get(sub)
            if opened is None:
                opened = _OPEN[sub] = _Open(sub.training)
            opened.count += 1
        try:
            module.eval()
        except BaseException:
            _close(module, subs)
            raise
    try:
        yield module
    finally:
        with _LOCK:
            _close(module, subs)
