"""Likelihood and sample-quality metrics for image models (see the package docstring for caveats).

Images enter as uint8/int levels (N, C, H, W) — the datamodules' `splits[name][0]` — with their
labels (N,); bits/dim is the mean negative log2-likelihood per sub-pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.codecs.image import ImagePatchCodec
from zoo.eval.classifier import ImageClassifier, predict
from zoo.models.base import GenerativeModel
from zoo.sampling import SamplingConfig, sample_tokens


@torch.no_grad()
def bits_per_dim(
    model: GenerativeModel,
    codec: ImagePatchCodec,
    levels: Tensor,
    labels: Tensor | None = None,
    *,
    batch_size: int = 256,
) -> float:
    """Exact test bits/dim of `model` on images `levels` (N, C, H, W), conditioned on `labels` when the
    model is class-conditional (labels=None: the "no condition" class)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for s in range(0, len(levels), batch_size):
        tokens = codec.levels_to_tokens(levels[s:s + batch_size].long()).to(device)  # (B, T)
        cond = labels[s:s + batch_size].to(device) if labels is not None and codec.num_classes else None
        logits = model(tokens, cond=cond)  # (B, T, V): position t predicts token t
        total += float(F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="sum"))
        count += tokens.numel()
    model.train(was)
    return total / count / math.log(2)


def independent_pixel_bits_per_dim(
    codec: ImagePatchCodec,
    train_levels: Tensor,
    test_levels: Tensor,
    train_labels: Tensor | None = None,
    test_labels: Tensor | None = None,
    *,
    alpha: float = 1.0,
) -> float:
    """Bits/dim of independent per-sub-pixel categoricals fitted on the training images.

    Each sub-pixel position (channel, row, column) gets its own histogram over the levels, smoothed
    by adding `alpha` to every count (Laplace's rule for alpha = 1); with labels, one set of
    histograms per class (the class-conditional version).
    """
    v = codec.levels
    train = train_levels.long().flatten(1)  # (N, D)
    test = test_levels.long().flatten(1)
    if train_labels is None:
        train_labels = torch.zeros(len(train), dtype=torch.long)
        test_labels = torch.zeros(len(test), dtype=torch.long)
    k = int(max(train_labels.max(), test_labels.max())) + 1
    d = train.shape[1]
    counts = torch.full((k, d, v), alpha, dtype=torch.float64)
    counts.index_put_((train_labels[:, None].expand_as(train), torch.arange(d).expand_as(train), train),
                      torch.ones(train.shape, dtype=torch.float64), accumulate=True)
    logp = (counts / counts.sum(-1, keepdim=True)).log()  # (K, D, V)
    nll = -logp[test_labels[:, None], torch.arange(d), test]  # (N, D)
    return float(nll.mean()) / math.log(2)


@torch.no_grad()
def sample_class_accuracy(
    model: GenerativeModel,
    codec: ImagePatchCodec,
    classifier: ImageClassifier,
    per_class: int,
    *,
    cfg: SamplingConfig | None = None,
    batch_size: int = 500,
    **overrides: object,
) -> tuple[float, Tensor, Tensor]:
    """Sample `per_class` images of every class; return (accuracy, images (N, C, H, W) float, labels (N,)).

    Accuracy is the fraction the classifier assigns to the requested class. `cfg`/`overrides` are the
    sampling settings (e.g. guidance=2.0, seed=0).
    """
    if not codec.num_classes:
        raise ValueError("sample_class_accuracy needs a class-conditional model (codec.num_classes > 0)")
    labels = torch.arange(codec.num_classes).repeat_interleave(per_class)
    cfg = cfg or SamplingConfig()
    images = []
    for s in range(0, len(labels), batch_size):
        seeded = {"seed": cfg.seed + s} if cfg.seed is not None else {}
        tokens = sample_tokens(model, codec, labels[s:s + batch_size], cfg=cfg, **(overrides | seeded))
        images.append(codec.decode_batch(tokens.cpu()))
    images = torch.cat(images)
    accuracy = float((predict(classifier, images) == labels).float().mean())
    return accuracy, images, labels


class _Features(nn.Module):
    """The classifier's penultimate layer, in the form torchmetrics' FID takes as a custom extractor."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)


@torch.no_grad()
def classifier_fid(classifier: ImageClassifier, real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between float images `real` and `fake` (N, C, H, W in [0, 1]) in the classifier's
    feature space, computed by torchmetrics. Not comparable with Inception FID (see zoo.eval)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    was = classifier.training
    classifier.eval()
    fid = FrechetInceptionDistance(feature=_Features(classifier), normalize=True)
    fid.update(real.float(), real=True)
    fid.update(fake.float(), real=False)
    value = float(fid.compute())
    classifier.train(was)
    return value
