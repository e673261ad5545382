"""records: the on-disk dataset contract between the data line and the model line. `shards` writes
(prepare) and reads (features, trainers, evaluate, export) data/processed/<key>/: sharded TFRecords,
manifest.json, labels.json; `tables` the per-example Parquet tables (the index, predictions).
"""
