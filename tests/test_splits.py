from collections import Counter

from tasks.prepare.splits import carve, percentage, shuffle_order, split_of


def test_split_is_a_pure_function_of_the_id():
    assert split_of("mnist/train/000042", 10, 10) == split_of("mnist/train/000042", 10, 10)
    assert 0.0 <= percentage("x") <= 100.0


def test_carve_proportions_match_the_percentages():
    ids = [f"emnist_letters/train/{i:06d}" for i in range(20000)]
    counts = Counter(carve(ids, 10, 20))
    assert abs(counts["validation"] / 20000 - 0.10) < 0.01
    assert abs(counts["test"] / 20000 - 0.20) < 0.01


def test_growing_a_dataset_never_moves_existing_examples():
    ids = [f"d/train/{i:06d}" for i in range(1000)]
    before = carve(ids, 10, 10)
    after = carve(ids + [f"d/train/{i:06d}" for i in range(1000, 1500)], 10, 10)
    assert list(after[:1000]) == list(before)


def test_shuffle_order_is_a_deterministic_permutation():
    ids = [f"d/train/{i}" for i in range(500)]
    order = shuffle_order(ids)
    assert sorted(order.tolist()) == list(range(500))
    assert order.tolist() == shuffle_order(ids).tolist()
    assert order.tolist() != list(range(500))
