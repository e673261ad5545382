"""Which examples look alike: blocked all-pairs search over embeddings (cosine) and perceptual hashes
(Hamming distance), in bounded memory.

Written here rather than taken from a nearest-neighbour library: at these sizes (8k photos, 125k
digits) an exact blocked matrix product with numpy's BLAS is seconds to a minute on 2 cores, needs
no index to build or tune, and gives exact neighbours, which a leak check wants (faiss/annoy would be
a second native dependency for an approximate answer).
"""
from __future__ import annotations

import numpy as np

BLOCK_BYTES = 256 * 2**20  # one block of the similarity matrix


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices N x k, cosines N x k) of each row's k most similar other rows (itself excluded), best
    first, for L2-normalised rows `x`."""
    n = len(x)
    k = max(1, min(int(k), n - 1))
    rows = max(1, BLOCK_BYTES // (4 * max(n, 1)))
    idx = np.zeros((n, k), np.int64)
    sim = np.zeros((n, k), np.float32)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        s = x[start:stop] @ x.T
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        sim[start:stop] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def close_hashes(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every pair i < j of 64-bit hashes at most `max_distance` apart."""
    h = np.asarray(hashes, np.uint64)
    n = len(h)
    rows = max(1, BLOCK_BYTES // (8 * max(n, 1)))
    out = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = np.bitwise_count(h[start:stop, None] ^ h[None, :])
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        keep = i < j
        out += [(int(a), int(b), int(c)) for a, b, c in zip(i[keep], j[keep], d[i[keep] - start, j[keep]])]
    return out


def hamming(a: int, b: int) -> int:
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


THUMB = 32        # the pixel check compares 32 x 32 thumbnails...
STORE = 64        # ...cut from 64 x 64 ones (kept per image), so a crop can be undone before the comparison
BLOCK = 4         # blocks of the comparison: a card's corner index is about one block
SHIFT = 2         # how far (thumbnail pixels) a block may move to find its match
SCALES = (1.0, 1.05, 1.1)  # centre crops tried on either image: a light crop (up to ~10 %) is undone


def thumbnail(image: np.ndarray) -> np.ndarray:
    """STORE x STORE x C uint8 (PIL's box-filter resize) of one uint8 image."""
    from PIL import Image

    img = image.squeeze(-1) if image.shape[-1] == 1 else image
    small = np.asarray(Image.fromarray(img).resize((STORE, STORE), Image.Resampling.BOX))
    return small.reshape(STORE, STORE, -1)


def _views(t: np.ndarray) -> list[np.ndarray]:
    """The THUMB-size view of a stored thumbnail at each of SCALES (centre crop, resized), standardised:
    brightness and contrast divided out per channel."""
    from PIL import Image

    img = Image.fromarray(t.squeeze(-1) if t.shape[-1] == 1 else t)
    out = []
    for scale in SCALES:
        c = (STORE - STORE / scale) / 2
        v = np.asarray(img.crop((c, c, STORE - c, STORE - c)).resize((THUMB, THUMB), Image.Resampling.BOX),
                       np.float32).reshape(THUMB, THUMB, -1)
        out.append((v - v.mean(axis=(0, 1))) / np.maximum(v.std(axis=(0, 1)), 8.0))
    return out


def block_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Where two standardised THUMB x THUMB views differ most: each BLOCK x BLOCK block of `a` is matched
    to `b` within +-SHIFT pixels (block matching, as a video coder does), and the worst block's mean
    absolute difference is returned, in standard deviations."""
    pad = np.pad(b, ((SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)), mode="edge")
    n = THUMB // BLOCK
    best = np.full((n, n), np.inf, np.float32)
    blocks_a = a.reshape(n, BLOCK, n, BLOCK, -1)
    for dy in range(2 * SHIFT + 1):
        for dx in range(2 * SHIFT + 1):
            shifted = pad[dy:dy + THUMB, dx:dx + THUMB].reshape(n, BLOCK, n, BLOCK, -1)
            best = np.minimum(best, np.abs(blocks_a - shifted).mean(axis=(1, 3, 4)))
    return float(best.max())


def picture_difference(a: np.ndarray, b: np.ndarray) -> float:
    """How far two stored thumbnails are from being one picture: the block difference of the pair,
    after undoing a light crop of either (the best of SCALES). On the real cards
    (`python bench/check_bench.py --calibrate cards`, docs/data-checks.md) re-encoded and resized copies
    score low, the look-alikes of one deck that differ only in a corner index higher, and brightened or
    cropped copies overlap the look-alikes: a threshold keeps look-alikes out at the price of those."""
    va, vb = _views(a), _views(b)
    return min(min(block_difference(va[0], v) for v in vb), min(block_difference(v, vb[0]) for v in va[1:]))
