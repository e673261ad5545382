"""Model recipes: shapes, raw uint8 input, and transfer freezing really freezes."""
import keras
import numpy as np
import pytest

from tasks.cnn.models import ARCHS, build
from tasks.cnn.train import transfer


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_recipes_take_raw_pixels_and_output_probabilities(arch):
    model = build(arch, 7)
    assert model.inputs[0].dtype == "uint8" and model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 7)
    probs = model(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_reference_cnn_is_the_study_architecture():
    kinds = [type(l).__name__ for l in build("reference_cnn", 26).layers]
    assert kinds == ["Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense",
                     "Dropout", "Dense"]
    model = build("reference_cnn", 26)
    assert [model.get_layer(n).filters for n in ("conv1", "conv2")] == [32, 64]
    assert model.get_layer("dense1").units == 128


def test_unknown_arch_and_freeze_are_rejected():
    with pytest.raises(ValueError):
        build("nope", 3)
    with pytest.raises(ValueError):
        transfer(build("reference_cnn", 3), 2, freeze="everything")


def weights(model, name):
    return [w.copy() for w in model.get_layer(name).get_weights()]


FROZEN = {"none": set(), "conv": {"conv1", "conv2"}, "conv_dense": {"conv1", "conv2", "dense1"}}


@pytest.mark.parametrize("freeze", sorted(FROZEN))
def test_transfer_freezing_really_freezes(freeze):
    keras.utils.set_random_seed(0)
    source = build("reference_cnn", 5)
    model = transfer(source, 3, freeze)
    assert model.output_shape == (None, 3)
    for name in ("conv1", "conv2", "dense1"):  # copied from the source
        for a, b in zip(weights(model, name), weights(source, name)):
            np.testing.assert_array_equal(a, b)
    assert model.get_layer("head") is not source.get_layer("head")
    before = {n: weights(model, n) for n in ("conv1", "conv2", "dense1", "head")}
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8), rng.integers(0, 3, 32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for name, old in before.items():
        same = all(np.array_equal(a, b) for a, b in zip(old, weights(model, name)))
        assert same == (name in FROZEN[freeze]), (freeze, name)
    for a, b in zip(weights(source, "conv1"), before["conv1"]):  # the source model is untouched
        np.testing.assert_array_equal(a, b)


def test_transfer_freezes_batch_norm_statistics_too():
    keras.utils.set_random_seed(0)
    model = transfer(build("bn_cnn", 4), 2, "conv")
    bn_before = weights(model, "conv1_bn")  # gamma, beta, moving mean, moving variance
    x = np.random.default_rng(2).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, np.zeros(16, np.int64), batch_size=8, epochs=1, verbose=0)
    for a, b in zip(bn_before, weights(model, "conv1_bn")):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights(model, "dense1_bn")[2], np.zeros_like(weights(model, "dense1_bn")[2]))


@pytest.mark.parametrize("arch, params", [
    ("softmax", 7_850),                    # 784 x 10 + 10
    ("lecture_conv", 433_290),             # Conv2D(64, 3) -> Flatten -> Dense(10)
    ("lecture_conv_dense", 649_775),       # ... -> Dense(15, tanh) -> Dense(10)
    ("lecture_conv_pool_dense", 163_055),  # Conv2D(64, 3) -> MaxPooling2D(2) -> Flatten -> Dense(15, tanh) -> Dense(10)
])
def test_lecture_baselines_have_the_lectures_parameter_counts(arch, params):
    model = build(arch, 10, (28, 28, 1), seed=0)
    assert model.count_params() == params
    assert model.get_layer("head").activation.__name__ == "softmax"
    assert model.input.dtype == "uint8"  # rescaling inside: raw pixels in, no extra parameters


def test_lecture_mlp_trains_above_chance_on_a_tiny_task():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    x = rng.integers(0, 128, (256, 28, 28, 1)).astype("uint8")
    x[y == 1, :14] += 120  # class 1: a bright top half
    model = build("mlp", 2, (28, 28, 1), seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.8
