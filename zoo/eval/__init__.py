"""Evaluating image models inside the project: likelihood, and sample quality judged by a classifier.

* `bits_per_dim`: exact test negative log-likelihood per sub-pixel, in bits;
  `independent_pixel_bits_per_dim`: the same for a model of independent pixels (the baseline to beat).
* `train_classifier`: a small CNN trained on the same data split; its own test accuracy is reported
  beside every score it gives.
* `sample_class_accuracy`: how often that classifier recognises the requested class in samples.
* `classifier_fid`: Fréchet distance between test images and samples in that classifier's feature
  space (torchmetrics). It is NOT comparable with published FID, which uses Inception-v3 features
  of 299×299 RGB images; compare it only between models scored with the same classifier.
"""

from zoo.eval.classifier import ImageClassifier, classifier_accuracy, train_classifier
from zoo.eval.metrics import (
    bits_per_dim,
    classifier_fid,
    independent_pixel_bits_per_dim,
    sample_class_accuracy,
)

__all__ = [
    "ImageClassifier",
    "bits_per_dim",
    "classifier_accuracy",
    "classifier_fid",
    "independent_pixel_bits_per_dim",
    "sample_class_accuracy",
    "train_classifier",
]
