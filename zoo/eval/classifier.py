"""A small CNN classifier trained on the image datasets, used to judge samples (class accuracy, FID).

Input: float images (B, C, H, W) in [0, 1] (`codec.dequantize` of levels), any size >= 4×4.
Output: class logits (B, K); `features` gives the penultimate activations (B, num_features) that
`classifier_fid` compares.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


class ImageClassifier(nn.Module):
    """Two conv stages (3×3 convs, max-pool), global 2×2 average pool, a `num_features`-wide hidden layer."""

    def __init__(self, channels: int, num_classes: int, *, width: int = 32, num_features: int = 64,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        self.num_features = num_features  # read by torchmetrics' FID for a custom feature extractor
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 2·width·4): size-independent
            nn.Dropout(dropout), nn.Linear(8 * width, num_features), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_features)."""
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _shift(x: Tensor, g: torch.Generator, max_shift: int = 1) -> Tensor:
    """Random translation by up to `max_shift` pixels per image (zero fill): samples are rarely centred
    exactly as the training images, and the classifier should not care."""
    b, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (b,), generator=g) for _ in range(2))
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_classifier(
    train_images: Tensor,
    train_labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> ImageClassifier:
    """Train on float images (N, C, H, W) in [0, 1]; keep the epoch with the best validation accuracy.

    Deterministic given `seed` (and the thread count). Returns the classifier in eval mode.
    """
    if train_images.ndim != 4 or not torch.is_floating_point(train_images):
        raise ValueError(f"train_images must be float (N, C, H, W) in [0, 1], got {train_images.dtype} "
                         f"{tuple(train_images.shape)}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
        model = ImageClassifier(train_images.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(train_labels) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    best, best_acc = copy.deepcopy(model.state_dict()), -1.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_labels), generator=g)
        for s in range(0, len(order), batch_size):
            i = order[s:s + batch_size]
            loss = F.cross_entropy(model(_shift(train_images[i], g)), train_labels[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = classifier_accuracy(model, val_images, val_labels)
        if acc > best_acc:
            best, best_acc = copy.deepcopy(model.state_dict()), acc
        log.debug("classifier epoch %d: val accuracy %.4f", epoch, acc)
    model.load_state_dict(best)
    log.info("classifier: best validation accuracy %.4f", best_acc)
    return model.eval()


@torch.no_grad()
def predict(model: ImageClassifier, images: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted class ids (N,) for float images (N, C, H, W) in [0, 1]."""
    was = model.training
    model.eval()
    out = torch.cat([model(images[s:s + batch_size]).argmax(-1) for s in range(0, len(images), batch_size)])
    model.train(was)
    return out


def classifier_accuracy(model: ImageClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of images whose predicted class is `labels`."""
    return float((predict(model, images) == labels).float().mean())
