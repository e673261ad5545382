"""Model recipes by name, and transfer helpers.

Every model takes raw uint8 pixels [H, W, C] and rescales inside (Rescaling(1/255)), so the
exported TFLite model takes raw pixels too. Layer names are fixed ("conv1", "dense1", "head", ...)
so `transfer` can find the layers to copy.
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

    def init(self):
        return keras.initializers.GlorotUniform(seed=next(self._next))

    def dropout(self, rate: float, name: str):
        return layers.Dropout(rate, seed=next(self._next), name=name)

    def dense(self, units: int, name: str, **kwargs):
        return layers.Dense(units, kernel_initializer=self.init(), name=name, **kwargs)

    def conv(self, filters: int, name: str, **kwargs):
        return layers.Conv2D(filters, 3, kernel_initializer=self.init(), name=name, **kwargs)


def reference_cnn(num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """The reference CNN of the EMNIST -> MNIST transfer study."""
    s = Seeds(seed)
    return keras.Sequential([
        keras.Input(shape=input_shape, dtype="uint8", name="image"),
        layers.Rescaling(1.0 / 255, name="rescale"),
        s.conv(32, activation="relu", name="conv1"),
        s.conv(64, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool"),
        s.dropout(0.25, name="drop1"),
        layers.Flatten(name="flatten"),
        s.dense(128, activation="relu", name="dense1"),
        s.dropout(0.5, name="drop2"),
        s.dense(num_classes, activation="softmax", name="head", dtype="float32"),
    ], name="reference_cnn")


def _conv_bn(x, s: Seeds, filters: int, name: str):
    x = s.conv(filters, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def bn_cnn(num_classes: int, input_shape=(28, 28, 1), seed: int = 0, convs_per_block: int = 1,
           name: str = "bn_cnn") -> keras.Model:
    """Our recipe: three conv-BN-relu blocks (32, 64, 128 filters; pool after each of the first two),
    dropout, a BN dense layer of 256, dropout. `convs_per_block=2` doubles the first two blocks
    (conv1, conv1b, ...): more capacity for about 1.7x the compute of the reference CNN."""
    s = Seeds(seed)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for block, filters in ((1, 32), (2, 64)):
        x = _conv_bn(x, s, filters, f"conv{block}")
        for extra in range(1, convs_per_block):
            x = _conv_bn(x, s, filters, f"conv{block}{'bcd'[extra - 1]}")
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = _conv_bn(x, s, 128, "conv3")
    x = s.dropout(0.25, name="drop1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = s.dense(256, use_bias=False, name="dense1")(x)
    x = layers.BatchNormalization(name="dense1_bn")(x)
    x = layers.Activation("relu", name="dense1_relu")(x)
    x = s.dropout(0.5, name="drop2")(x)
    outputs = s.dense(num_classes, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def bn_cnn2(num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """bn_cnn with two convs in each of the first two blocks."""
    return bn_cnn(num_classes, input_shape, seed, convs_per_block=2, name="bn_cnn2")


# ---- the CNN lecture's baselines (its exercise: "a network of only a softmax layer; an MLP with 97-98 %
# accuracy; a CNN with 99 % on the test data"). Parameter counts on 28x28x1 with 10 classes are in
# tests/test_models.py; the rescaling layer adds none.


def _lecture(name: str, input_shape, seed: int, body) -> keras.Model:
    s = Seeds(seed)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    return keras.Model(inputs, body(s, x), name=name)


def _softmax_head(s: Seeds, x, num_classes: int):
    return s.dense(num_classes, activation="softmax", name="head", dtype="float32")(x)


def softmax(num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """Only a softmax layer on the pixels: 784 x 10 + 10 = 7,850 parameters."""
    return _lecture("softmax", input_shape, seed,
                    lambda s, x: _softmax_head(s, layers.Flatten(name="flatten")(x), num_classes))


def mlp(num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """Two hidden ReLU layers (256, 128) with dropout: the lecture's 97-98 % MLP."""
    def body(s, x):
        x = layers.Flatten(name="flatten")(x)
        x = s.dense(256, activation="relu", name="dense1")(x)
        x = s.dropout(0.2, name="drop1")(x)
        x = s.dense(128, activation="relu", name="dense2")(x)
        x = s.dropout(0.2, name="drop2")(x)
        return _softmax_head(s, x, num_classes)
    return _lecture("mlp", input_shape, seed, body)


def _lecture_cnn(name: str, pool: bool, hidden: int | None):
    def build_fn(num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
        def body(s, x):
            x = s.conv(64, activation="relu", name="conv1")(x)
            if pool:
                x = layers.MaxPooling2D(2, name="pool")(x)
            x = layers.Flatten(name="flatten")(x)
            if hidden:
                x = s.dense(hidden, activation="tanh", name="dense1")(x)
            return _softmax_head(s, x, num_classes)
        return _lecture(name, input_shape, seed, body)
    build_fn.__doc__ = (f"Conv2D(64, 3, relu){' -> MaxPooling2D(2)' if pool else ''} -> Flatten"
                        f"{f' -> Dense({hidden}, tanh)' if hidden else ''} -> Dense(softmax)")
    return build_fn


lecture_conv = _lecture_cnn("lecture_conv", pool=False, hidden=None)                  # 433,290 parameters
lecture_conv_dense = _lecture_cnn("lecture_conv_dense", pool=False, hidden=15)        # 649,775
lecture_conv_pool_dense = _lecture_cnn("lecture_conv_pool_dense", pool=True, hidden=15)  # 163,055

ARCHS = {"reference_cnn": reference_cnn, "bn_cnn": bn_cnn, "bn_cnn2": bn_cnn2,
         "softmax": softmax, "mlp": mlp, "lecture_conv": lecture_conv,
         "lecture_conv_dense": lecture_conv_dense, "lecture_conv_pool_dense": lecture_conv_pool_dense}

FREEZE_CHOICES = ("none", "conv", "conv_dense")


def build(arch: str, num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """A fresh model of recipe `arch` (a key of ARCHS), its random init fixed by `seed`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, input_shape=input_shape, seed=seed)


def _is_conv_part(layer) -> bool:
    """Layers of the convolutional feature extractor (conv and their batch norms)."""
    return layer.name.startswith("conv")


def _is_first_dense_part(layer) -> bool:
    return layer.name.startswith("dense1")


def _reseeded(seeds: Seeds):
    """clone_model's clone_function: dropout layers get fixed seeds (a source model saved without
    them would otherwise draw fresh ones from the shared Python RNG)."""
    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layers.Dropout):
            config["seed"] = next(seeds._next)
        return layer.__class__.from_config(config)
    return clone


def transfer(source_model: keras.Model, num_classes: int, freeze: str = "conv", seed: int = 0) -> keras.Model:
    """A copy of `source_model` with a fresh last layer of `num_classes` outputs.

    All layers except the head are copied (same architecture, same weights); then
    freeze="none" trains everything (fine-tuning), "conv" freezes the conv layers (variant b),
    "conv_dense" freezes the conv layers and the first dense layer (variant c).
    Frozen BatchNorm layers run in inference mode (Keras 3 semantics of trainable=False).
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    seeds = Seeds(seed)
    model = keras.models.clone_model(source_model, clone_function=_reseeded(seeds))
    model.set_weights(source_model.get_weights())
    features = model.get_layer("head").input  # what the old head saw
    outputs = seeds.dense(num_classes, activation="softmax", name="head", dtype="float32")(features)
    new = keras.Model(model.inputs, outputs, name=f"{source_model.name}_transfer")
    for layer in new.layers:
        frozen = (freeze in ("conv", "conv_dense") and _is_conv_part(layer)) or (
            freeze == "conv_dense" and _is_first_dense_part(layer))
        layer.trainable = not frozen
    return new
