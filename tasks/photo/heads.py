"""Classifier heads by name, on a base's last feature map (4-D) or on cached pooled features (2-D).

Layer names are fixed (`pool`, `head_conv`, `head_dense`, `head_dropout`, `head`) so a head trained
on cached features moves into the full model by name. Every random layer gets a seed from `Seeds`.
"""
from __future__ import annotations

from keras import layers

from tasks.core.seeds import Seeds


def study_cards(x, num_classes: int, seeds: Seeds, dropout: float = 0.0):
    """The Kaggle cards study (MobileNetV3): GAP, Dense(128, relu), softmax."""
    x = _pool(x)
    x = seeds.dense(128, activation="relu", name="head_dense")(x)
    return _out(x, num_classes, seeds)


def study_banknotes(x, num_classes: int, seeds: Seeds, dropout: float = 0.2):
    """The banknote study (MobileNetV2): Conv2D(32, 3, relu) on the feature map, Dropout, GAP, softmax.

    'valid' padding as in the study (7x7 -> 5x5 at 224 px); 'same' where the map is under 3x3
    (small test images), where a valid 3x3 conv has nothing to cover."""
    if len(x.shape) != 4:
        raise ValueError("study_banknotes needs the base's feature map; it cannot run on pooled features")
    small = min(x.shape[1], x.shape[2]) < 3
    x = seeds.conv(32, activation="relu", padding="same" if small else "valid", name="head_conv")(x)
    x = seeds.dropout(dropout, name="head_dropout")(x)
    x = _pool(x)
    return _out(x, num_classes, seeds)


def ours(x, num_classes: int, seeds: Seeds, dropout: float = 0.2):
    """GAP (skipped on pooled features), Dropout, softmax: a linear probe, trainable on a cache."""
    x = _pool(x)
    x = seeds.dropout(dropout, name="head_dropout")(x)
    return _out(x, num_classes, seeds)


def spatial(x, num_classes: int, seeds: Seeds, dropout: float = 0.2, filters: int = 64):
    """1x1 conv to a few channels, then the whole map flattened into the softmax: where things are
    stays visible to the classifier (a card's rank is its count of pips, which GAP averages away).
    Trainable on a cache of feature maps (features `pool: false`)."""
    if len(x.shape) != 4:
        raise ValueError("the spatial head needs the base's feature map; a cache of pooled features "
                         "cannot train it (set `pool: false` on the features entry)")
    x = layers.Conv2D(filters, 1, activation="relu", kernel_initializer=seeds.init(), name="head_conv")(x)
    x = layers.Flatten(name="flatten")(x)
    x = seeds.dropout(dropout, name="head_dropout")(x)
    return _out(x, num_classes, seeds)


HEADS = {"study_cards": study_cards, "study_banknotes": study_banknotes, "ours": ours, "spatial": spatial}
CACHE_HEADS = {"ours", "spatial"}  # heads whose weights sit after the cached part (trainable on a cache)


def head(name: str, x, num_classes: int, seeds: Seeds, dropout: float | None = None):
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    return HEADS[name](x, num_classes, seeds, **({} if dropout is None else {"dropout": float(dropout)}))


def _pool(x):
    return layers.GlobalAveragePooling2D(name="pool")(x) if len(x.shape) == 4 else x


def _out(x, num_classes: int, seeds: Seeds):
    return seeds.dense(num_classes, activation="softmax", name="head", dtype="float32")(x)
