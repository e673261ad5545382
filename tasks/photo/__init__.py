"""MobileNet transfer learning for photo datasets (playing cards, banknotes, any folder dataset).

Recipes with `trainer: tasks/photo` in params.yaml `models` are trained by `tasks.photo.train.train(key,
params, data_dir, out_dir, init_path)`; what `init` (-> init_path) names decides the mode:

- `data/features/<key>` (a bottleneck cache from `features@<key>`, see features.py): the `ours` head
  (GAP, dropout, softmax) trains on the cached pooled features in seconds; with `fine_tune_epochs`
  it then moves onto the cache's own base (base.weights.h5) and the top of the base is fine-tuned on the
  augmented images.
- `data/teach/<key>` (a teacher's targets from `teach@<key>`, see teach.py): distillation. The student
  starts from the features cache those targets were made on, and learns (1 - distill_weight) x one-hot
  + distill_weight x the teacher's softened predictions.
- `data/weights/<key>` (one .h5 / .weights.h5 file) or a .py file (random init): the full model is
  built here (backbones.py + heads.py) and trained on the images: head first with the base frozen
  (`freeze_base: false` trains everything from the start, as the cards study did), then fine-tuning
  from base layer `fine_tune_from` on.

Every model takes raw uint8 pixels and applies MobileNet's x/127.5 - 1 inside; augmentation
(augment.py) runs in the training model only. Batch norm stays frozen (inference mode) unless a
recipe says `train_bn: true`. Weights are never downloaded. Recipe keys and defaults: tasks/photo/train.py DEFAULTS.

The package imports nothing itself: `tasks.photo.features` (features@) and `tasks.photo.teach`
(teach@) do not load the trainer. The trainer of a package (`trainer: tasks/photo`) is its `train`
module's `train`.
"""
