"""cnn: the small-CNN trainer (digits, letters). Enters: a processed dataset (tasks/records) and a
recipe from params `models` whose `trainer` is tasks/cnn; `init` is this package's `models.py` (random
init of `arch`) or a trained model.keras (transfer, `freeze`). Leaves: models/<key>/model.keras,
history.json, train.json. `train` is the entry; `models` builds the architectures by name.
"""
