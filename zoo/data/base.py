"""What every datamodule shares: a deterministic, resumable stream of training batches.

Batch `b` of a run is a pure function of `(seed, b)`: it is drawn from a generator seeded with
both, as one *global* batch of `batch_size × world_size` examples, and each rank keeps its own
slice. Hence
  * resuming needs only the number of batches already consumed (saved in the checkpoint through
    Lightning's stateful-dataloader hook: `state_dict` / `load_state_dict` below);
  * DDP/FSDP on N processes sees exactly the examples a single process sees with an N× batch.

Batches are dicts: `idx` (B, T) int64 inputs, `targets` (B, T) int64 (-100 = ignore), and
optionally `cond` (B,) int64 class ids or (B, L) caption ids. For text and music, `targets` are the
next tokens (idx shifted by one); for images `idx == targets` and the model shifts internally,
behind its own start/class token. Either way the loss is cross-entropy(model(idx, cond), targets).

`StreamDataModule` is the one LightningDataModule the dataset families (`zoo.data.text`,
`zoo.data.image`, `zoo.data.music`, `zoo.data.text_image`) derive from: it owns the loaders (the
training `BatchStream`, the val/test `DataLoader`s and their workers); a family supplies only its
data, through `make_batch`, `batches_per_pass` and `eval_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

Batch = dict[str, Tensor]
MakeBatch = Callable[[torch.Generator, int], Batch]  # (generator, global batch size) -> batch


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BatchStream:
    """An iterable of `length` batches; iteration continues from `position` (resumable)."""

    def __init__(self, make_batch: MakeBatch, *, batch_size: int, length: int, seed: int = 0) -> None:
        if batch_size < 1 or length < 1:
            raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
        self.make_batch, self.batch_size, self.length, self.seed = make_batch, batch_size, length, seed
        self.position = 0

    def __len__(self) -> int:
        return self.length

    def batch(self, b: int) -> Batch:
        """The global batch number `b`, sliced for this rank."""
        rank, world = _world()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        full = self.make_batch(g, self.batch_size * world)
        lo, hi = rank * self.batch_size, (rank + 1) * self.batch_size
        return {k: v[lo:hi] for k, v in full.items()}

    def __iter__(self) -> Iterator[Batch]:
        while self.position < self.length:
            b = self.position
            self.position += 1  # counted when handed out: a checkpoint taken after step b resumes at b+1
            yield self.batch(b)
        self.position = 0  # a new epoch over the same stream starts again

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def stream_length(trainer: object | None, one_pass: int) -> int:
    """Batches a training stream should hold: the whole run (`max_steps × accumulate_grad_batches`)
    when a trainer with `max_steps > 0` is attached, else `one_pass` (about one epoch's worth)."""
    max_steps = getattr(trainer, "max_steps", None) or 0
    if max_steps > 0:
        return max_steps * trainer.accumulate_grad_batches
    return max(1, one_pass)


def random_crops(tokens: Tensor, block_size: int) -> MakeBatch:
    """Batches of random windows from a 1-D token array: idx = w[:-1], targets = w[1:]."""
    n = len(tokens) - block_size - 1
    if n < 1:
        raise ValueError(
            f"corpus has {len(tokens)} tokens, needs more than block_size + 1 = {block_size + 1}"
        )

    def make(g: torch.Generator, batch_size: int) -> Batch:
        starts = torch.randint(0, n + 1, (batch_size,), generator=g)
        w = torch.stack([torch.as_tensor(tokens[s:s + block_size + 1]) for s in starts.tolist()]).long()
        return {"idx": w[:, :-1], "targets": w[:, 1:]}

    return make


def sequential_windows(tokens: Tensor, block_size: int, max_windows: int | None = None) -> list[Batch]:
    """Non-overlapping evaluation windows covering the array (deterministic val/test loss)."""
    n = (len(tokens) - 1) // block_size
    if n < 1:
        raise ValueError(f"split has {len(tokens)} tokens, needs at least block_size + 1 = {block_size + 1}")
    if max_windows is not None:
        n = min(n, max_windows)
    out = []
    for i in range(n):
        w = torch.as_tensor(tokens[i * block_size:(i + 1) * block_size + 1]).long()
        out.append({"idx": w[:-1], "targets": w[1:]})
    return out


class StreamDataModule(L.LightningDataModule):
    """The loaders every dataset family shares; a family provides its data through three hooks.

    Hooks (subclasses):
      * `make_batch(g, batch_size)`: one global training batch drawn with `g` (the `MakeBatch`
        contract: a pure function of the generator's state, so batch b depends on (seed, b) only);
      * `batches_per_pass()`: about one epoch's worth of training batches (used when no trainer
        with `max_steps` is attached);
      * `eval_dataset(split)`: the examples of "val" or "test" in order, with `eval_collate()` (None:
        torch's default collation of dict items) turning `eval_batch_size` of them into a batch.
    `is_setup()` says whether `setup()` has run (default: a codec exists).

    The training loader is one `BatchStream` per datamodule, returned again on every call, so that
    its position (saved and restored by Lightning through the stream's `state_dict`) survives
    Lightning asking for the loader again; DDP rank slicing happens inside the stream.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, batch_size: int, seed: int = 0, num_workers: int = 0,
                 eval_batch_size: int | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.codec: Any = None
        self.sample_prompts: list[str] = []  # prompts for training-time samples; a family may fill it
        self._train_stream: BatchStream | None = None

    # -- hooks -------------------------------------------------------------------------------------
    def make_batch(self, g: torch.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    def batches_per_pass(self) -> int:
        raise NotImplementedError

    def eval_dataset(self, split: str) -> Dataset | Sequence[Any]:
        raise NotImplementedError

    def eval_collate(self) -> Callable[[list[Any]], Batch] | None:
        return None

    def is_setup(self) -> bool:
        return self.codec is not None

    def _require_setup(self) -> None:
        if not self.is_setup():
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for data")

    # -- loaders -----------------------------------------------------------------------------------
    def train_dataloader(self) -> BatchStream:
        """The same resumable stream on every call; its length follows the attached trainer."""
        self._require_setup()
        length = stream_length(self.trainer, self.batches_per_pass())
        if self._train_stream is None:
            self._train_stream = BatchStream(self.make_batch, batch_size=self.batch_size, length=length,
                                             seed=self.seed)
        self._train_stream.length = length  # the same stream keeps its position
        return self._train_stream

    def eval_dataloader(self, split: str) -> DataLoader:
        """The examples of `split` in order, `eval_batch_size` per batch (deterministic val/test loss)."""
        self._require_setup()
        return DataLoader(self.eval_dataset(split), batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.eval_collate(), num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
