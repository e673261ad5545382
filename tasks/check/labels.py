"""Label issues: out-of-sample class probabilities for every example, ranked by cleanlab.

- Photos: k-fold cross-validation of a linear model (scikit-learn's multinomial logistic regression)
  on frozen-backbone embeddings: each example's probabilities come from a model that never saw it.
- Arrays (MNIST, EMNIST): leave-one-out k nearest neighbours in PCA space, the neighbour search the
  duplicate check already ran: a neighbour vote excludes the example itself, so it is out-of-sample
  too, and on digits it is far stronger than a linear model on pixels (~97 % against ~92 % on MNIST).
cleanlab's confident learning (`find_label_issues`) picks the examples whose given label disagrees
confidently with those probabilities; `get_label_quality_scores` ranks them (lowest quality first).
"""
from __future__ import annotations

import numpy as np


def cross_val_probs(x: np.ndarray, y: np.ndarray, num_classes: int, folds: int, seed: int,
                    label: str = "label check") -> np.ndarray:
    """N x num_classes probabilities, each row from the fold model that did not train on it (the folds'
    progress reported as `label`, tasks/core/progress.py)."""
    from tasks.core.progress import Progress
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, np.int64)
    smallest = int(np.bincount(y, minlength=num_classes)[np.unique(y)].min())
    folds = max(2, min(int(folds), smallest)) if smallest >= 2 else 2
    probs = np.full((len(y), num_classes), 1.0 / num_classes, np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(seed))
    import warnings

    with Progress(label, folds, "folds") as done:
        for train, held in done.iterate(splitter.split(x, y)):
            scaler = StandardScaler().fit(x[train])
            model = LogisticRegression(C=1.0, max_iter=300, tol=1e-3)
            with warnings.catch_warnings():  # a fold missing a rare class, or lbfgs' iteration cap: not errors here
                warnings.simplefilter("ignore")
                model.fit(scaler.transform(x[train]), y[train])
            p = np.zeros((len(held), num_classes))
            p[:, model.classes_] = model.predict_proba(scaler.transform(x[held]))
            probs[held] = p
    return probs


def neighbour_probs(neighbours: np.ndarray, y: np.ndarray, num_classes: int, similarity: np.ndarray | None = None,
                    prior: float = 0.5) -> np.ndarray:
    """Leave-one-out kNN probabilities: each row's neighbours' labels (itself never among them), each vote
    weighted by its cosine similarity to the 4th power (the nearest count most, and the probabilities are
    continuous, so cleanlab's ranking has no ties), with `prior` pseudo-votes spread over the classes so
    no probability is exactly 0."""
    y = np.asarray(y, np.int64)
    votes = np.zeros((len(y), num_classes))
    labels = y[neighbours]
    weights = np.ones(labels.shape) if similarity is None else np.clip(similarity, 0.0, 1.0) ** 4
    for col in range(labels.shape[1]):
        np.add.at(votes, (np.arange(len(y)), labels[:, col]), weights[:, col])
    votes += prior * weights.mean(axis=1, keepdims=True) / num_classes
    return votes / votes.sum(axis=1, keepdims=True)


def label_issues(y: np.ndarray, probs: np.ndarray) -> list[dict]:
    """[{index, suggested, quality}] of the examples cleanlab flags, lowest label quality first."""
    import warnings

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(y, np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return []
    # cleanlab wants labels 0..K'-1 over the classes present and rows that sum to 1 over them
    remap = np.full(probs.shape[1], -1)
    remap[present] = np.arange(len(present))
    p = probs[:, present]
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    labels = remap[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(labels, p, return_indices_ranked_by="self_confidence")
        quality = get_label_quality_scores(labels, p)
    out = [{"index": int(i), "suggested": int(present[int(np.argmax(p[i]))]), "quality": float(quality[i])}
           for i in flagged]
    return sorted(out, key=lambda r: (r["quality"], r["index"]))
