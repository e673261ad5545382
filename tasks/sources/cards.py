"""Playing cards: Kaggle `gpiosenka/cards-image-datasetclassification`, 53 classes of 224x224 JPEGs
in train/ valid/ test/ class folders, plus cards.csv (class index, filepaths, labels, card type,
data set) which prepare uses to cross-check labels. A mirror holds it unzipped at <mirror>/cards/.
"""
from __future__ import annotations

KIND = "image_folder"
UPSTREAM = "kaggle:gpiosenka/cards-image-datasetclassification"
MIRROR_PATH = "cards"
INDEX_CSV = "cards.csv"


def label_attributes(class_names, root):
    return None
