"""evaluate: what a trained model is worth and the phone files. `metrics` (evaluate@): test-split
accuracy, per-class metrics, confusion matrix, misclassified grid -> reports/<key>/; `export`
(export@): TFLite float32, float16, dynamic-range and int8 (export.formats) -> models/<key>/tflite/,
with parity against Keras, `tflite_metadata` (labels and normalisation that MediaPipe and the Task
Library read), the blessing gate; `predict`: a .tflite on image files (`tlpipe predict`).
"""
