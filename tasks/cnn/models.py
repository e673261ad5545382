"""The small CNNs (digits and letters) by name: the architecture code of `init: tasks/cnn/models.py`.

Every model takes raw uint8 pixels [H, W, C] and rescales inside (Rescaling(1/255)), so the
exported TFLite model takes raw pixels too. Layer names are fixed ("conv1", "dense1", "head", ...)
so the digits trainer's `transfer` (tasks/cnn/train.py) can find the layers to copy.
"""
from __future__ import annotations

import keras
from keras import layers

from tasks.core.seeds import Seeds


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


def build(arch: str, num_classes: int, input_shape=(28, 28, 1), seed: int = 0) -> keras.Model:
    """A fresh model of recipe `arch` (a key of ARCHS), its random init fixed by `seed`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, input_shape=input_shape, seed=seed)
