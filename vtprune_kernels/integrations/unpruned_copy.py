"""``copy.deepcopy`` of a model with an active pruning handle returns an UNPRUNED copy.

A handle installs instance attributes on its model (``forward`` / ``generate`` wrappers bound to
that model). ``copy.deepcopy`` copies functions by reference, so a plain deep copy would keep the
original's wrappers: the copy would run the ORIGINAL model's weights, pruned, even after the block.
The handle therefore also installs ``__deepcopy__`` (``copy.deepcopy`` looks it up on the instance),
which copies the model the way ``copy.deepcopy`` does by default (``__getstate__``, deep-copied,
``__setstate__`` on a new instance) but without the handle's attributes, putting back the instance
attributes the handle had replaced. The copy is a plain model; the original stays pruned.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterable


def unpruned_deepcopy(model, installed: Iterable[str], replaced: Dict[str, object], memo: dict):
    """A deep copy of ``model`` without the ``installed`` instance attributes (the handle's), with the
    ``replaced`` ones (the model's own instance attributes before the handle) copied in their place."""
    cls = type(model)
    clone = cls.__new__(cls)
    memo[id(model)] = clone
    installed = set(installed)
    state = {name: value for name, value in model.__getstate__().items() if name not in installed}
    state.update(replaced)
    clone.__setstate__(copy.deepcopy(state, memo))
    return clone
