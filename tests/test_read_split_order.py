"""read_split's examples and their order, pinned against a reference read that uses no tf.data: each
shard's records parsed from its bytes in file order, taken round-robin over at most 8 shards at a
time as `interleave(cycle_length=8, block_length=1)` does (a finished shard's slot goes to the next
shard when the cycle comes back to it), each image decoded on its own with tf.io.decode_image, and
batched in Python. Trained models stay byte-identical across reader changes only if this holds, so a
faster reader (parallel decode, other batching, prefetch) must yield exactly these arrays in this order."""
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.records.shards import example_bytes, manifest_head, read_split, write_manifest, write_records

CLASSES = ["a", "b", "c", "d"]
# Uneven shard sizes and more shards than the 8 read at once, so slots free up and refill mid-split.
COUNTS = [9, 2, 14, 5, 1, 11, 7, 3, 12, 6, 4]
CYCLE = 8


def records(path: Path):
    """Serialized examples of a TFRecord file, in file order (length, length CRC, data, data CRC)."""
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        yield data[pos + 12:pos + 12 + n]
        pos += 12 + n + 4


def round_robin(streams, cycle: int):
    """tf.data's interleave order for block_length 1: slots filled lazily in turn; an exhausted
    stream empties its slot, which the next stream takes when the cycle comes back to it."""
    streams, slots, i, done = iter(streams), [None] * cycle, 0, False
    while True:
        if slots[i] is None and not done:
            nxt = next(streams, None)
            if nxt is None:
                done = True
            else:
                slots[i] = iter(nxt)
        if slots[i] is not None:
            item = next(slots[i], None)
            if item is not None:
                yield item
            else:
                slots[i] = None
        elif done and all(s is None for s in slots):
            return
        i = (i + 1) % cycle


def reference(processed: Path, split: str, manifest: dict, batch_size, with_ids: bool):
    import tensorflow as tf

    channels = manifest["image_shape"][-1]
    out = []
    for record in round_robin((records(processed / s["file"]) for s in manifest["splits"][split]["shards"]), CYCLE):
        f = tf.train.Example.FromString(record).features.feature
        image = tf.io.decode_image(f["image/encoded"].bytes_list.value[0], channels=channels,
                                   expand_animations=False).numpy()
        example = (image, np.int64(f["label"].int64_list.value[0]), f["source_id"].bytes_list.value[0])
        out.append(example if with_ids else example[:2])
    if batch_size is None:
        return [tuple(np.asarray(x) for x in ex) for ex in out]
    return [tuple(np.stack([ex[k] for ex in out[i:i + batch_size]]) for k in range(len(out[0])))
            for i in range(0, len(out), batch_size)]


def image(rng, size: int, channels: int) -> np.ndarray:
    """Noise over a gradient: no two images alike, and JPEG's rounding has work to do."""
    ramp = np.add.outer(np.arange(size), np.arange(size))[..., None] * 4 + np.arange(channels) * 40
    return np.clip(ramp + rng.integers(0, 60, (size, size, channels)), 0, 255).astype(np.uint8)


def encode(im: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
    pil.save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    return buf.getvalue()


def write_split(root: Path, fmt: str, channels: int, size: int = 24) -> dict:
    rng = np.random.default_rng(7)
    shards, labels = [], []
    for k, count in enumerate(COUNTS):
        examples = []
        for j in range(count):
            label = int(rng.integers(0, len(CLASSES)))
            labels.append(label)
            examples.append(example_bytes(encode(image(rng, size, channels), fmt), (size, size, channels), label,
                                          CLASSES[label], f"s{k:02d}/{j:02d}", fmt=fmt.encode()))
        shards.append(write_records(root / f"train-{k:05d}-of-{len(COUNTS):05d}.tfrecord", examples))
    split = {"count": len(labels), "per_class": {str(c): labels.count(c) for c in range(len(CLASSES))},
             "shards": shards}
    return write_manifest(root, manifest_head(CLASSES, [size, size, channels], fmt, {"train": split}))


@pytest.fixture(scope="module", params=[("jpeg", 3), ("png", 1)], ids=["jpeg-rgb", "png-gray"])
def dataset(request, tmp_path_factory):
    fmt, channels = request.param
    root = tmp_path_factory.mktemp(f"shards-{fmt}")
    return root, write_split(root, fmt, channels)


@pytest.mark.parametrize("batch_size", [None, 1, 5, 32, 128])
@pytest.mark.parametrize("with_ids", [False, True])
def test_read_split_yields_the_reference_examples_in_order(dataset, batch_size, with_ids):
    processed, manifest = dataset
    expected = reference(processed, "train", manifest, batch_size, with_ids)
    got = list(read_split(processed, "train", batch_size=batch_size, with_ids=with_ids).as_numpy_iterator())
    assert len(got) == len(expected)
    for n, (ours, ref) in enumerate(zip(got, expected)):
        assert len(ours) == len(ref) == (3 if with_ids else 2)
        for a, b in zip(ours[:2], ref[:2]):  # images, labels: same dtype, shape and bytes
            assert (a.dtype, a.shape) == (b.dtype, b.shape), f"element {n}"
            assert a.tobytes() == b.tobytes(), f"element {n} differs from the reference decode"
        if with_ids:  # tf.data gives an object array of bytes, the reference a bytes array
            assert np.asarray(ours[2]).tolist() == np.asarray(ref[2]).tolist(), f"element {n}: other source ids"


def test_reference_order_interleaves_the_shards(dataset):
    """The reference is not just the files one after another (so the test above pins the interleave)."""
    processed, manifest = dataset
    ids = [sid.item().decode() for _, _, sid in reference(processed, "train", manifest, None, True)]
    assert sorted(ids) == sorted(f"s{k:02d}/{j:02d}" for k, n in enumerate(COUNTS) for j in range(n))
    assert ids[:CYCLE + 1] == [f"s{k:02d}/00" for k in range(CYCLE)] + ["s00/01"]
    assert "s08/00" in ids[ids.index("s04/00") + 1:ids.index("s04/00") + 1 + 2 * CYCLE]  # refilled slot
