"""Seeded layers: a fixed seed for every random layer of a model, counted up from the recipe seed.

Shared by the small CNNs (tasks/cnn/models.py), the digits trainer's transfer head (tasks/cnn/train.py) and
the photo models (tasks/photo): a module of its own, so that none of them depends on another's code.
"""
from __future__ import annotations

import itertools

import keras
from keras import layers


class Seeds:
    """A fixed seed for every random layer, counted up from the recipe seed.

    Layers left unseeded draw their seeds from the process-wide Python RNG, which other threads
    (Prefect's services, for one) draw from too; that made training nondeterministic under them.
    """

    def __init__(self, seed: int = 0):
        self._next = itertools.count(int(seed) * 1000)

    def next_seed(self) -> int:
        return next(self._next)

    def init(self):
        return keras.initializers.GlorotUniform(seed=next(self._next))

    def dropout(self, rate: float, name: str):
        return layers.Dropout(rate, seed=next(self._next), name=name)

    def dense(self, units: int, name: str, **kwargs):
        return layers.Dense(units, kernel_initializer=self.init(), name=name, **kwargs)

    def conv(self, filters: int, name: str, **kwargs):
        return layers.Conv2D(filters, 3, kernel_initializer=self.init(), name=name, **kwargs)
