"""A fifth zoo member that lives outside the zoo package: a bigram model of digit strings.

It is what docs/adding_a_model.md asks of a plug-in, and nothing more: a config dataclass and an
`nn.Module` registered with `zoo.models.base.register`, a `Codec` subclass (registered by its
`type_name`), a LightningDataModule, and a `Member`. Its package metadata names `PlugMember` in the
entry-point group `zoo.members`; importing this module (which zoo does when it loads the entry point)
registers the model and the codec, so checkpoints and exports of it load in a fresh process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from zoo.codecs.base import Codec
from zoo.members import Member, Samples, SampleSet, output_path
from zoo.models.base import GenerativeModel, register
from zoo.sampling import OPTIONS, SamplingConfig, generate

CONF_DIR = Path(__file__).resolve().parent / "conf"  # model/plug.yaml, data/plug.yaml for hydra.searchpath


class DigitCodec(Codec):
    """"0".."9" <-> ids 0..9, exactly."""

    type_name = "plug_digits"
    vocab_size = 10

    def encode(self, x: str) -> list[int]:
        if not x.isdigit():
            raise ValueError(f"DigitCodec encodes digits only, got {x!r}")
        return [int(c) for c in x]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(str(int(i)) for i in ids)


@dataclass(kw_only=True)
class BigramConfig:
    vocab_size: int | None = None
    block_size: int = 16


@register("bigram", BigramConfig)
class Bigram(GenerativeModel):
    """Next-token logits from the current token alone: one (V, V) table."""

    def __init__(self, config: BigramConfig) -> None:
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx: Tensor, cond: Tensor | None = None, cache: Any = None, last_only: bool = False) -> Tensor:
        return self.table(idx[:, -1:] if last_only else idx)  # (B, T, V)

    def new_cache(self, batch: int, max_len: int | None = None, **kwargs: Any) -> Any:
        # A bigram needs no past (each step sees only its own token), but `generate` must get a cache
        # object (None means use_cache=False) to feed one token per step through decode_step.
        return []

    def decode_step(self, idx: Tensor, *, cache: Any) -> Tensor:
        return self.table(idx)[:, -1]


class DigitData(L.LightningDataModule):
    """Counting sequences (0 1 2 ... 9 0 1 ...) from random starts: a bigram learns them exactly."""

    def __init__(self, batch_size: int = 8, block_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.block_size, self.seed = batch_size, block_size, seed
        self.codec = DigitCodec()

    def _loader(self, n: int, seed: int) -> torch.utils.data.DataLoader:
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, 10, (n, 1), generator=g)
        seq = (starts + torch.arange(self.block_size + 1)) % 10  # (n, T + 1)
        rows = [{"idx": s[:-1], "targets": s[1:]} for s in seq]
        return torch.utils.data.DataLoader(rows, batch_size=self.batch_size)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(64, self.seed)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(16, self.seed + 1)


class PlugMember(Member):
    """Digit strings: `prompt` (digits) -> its continuation; `out` writes them to a .txt file."""

    name = "digits_plug"
    codec_types = ("plug_digits",)
    model_types = ("bigram",)
    inputs = {"prompt": None, "out": None}
    primary = "prompt"
    sampling = frozenset(OPTIONS) - {"guidance", "stop"}
    rejected = {"guidance": "a bigram has no condition"}

    def generate(self, model: Any, codec: Any, inputs: dict[str, Any], sampling: SamplingConfig, *,
                 on_text: Callable[[str], Any] | None = None) -> Samples:
        prompt = str(inputs["prompt"] or "0")
        rows = generate(model, [codec.encode(prompt)] * sampling.num_samples, sampling)
        texts = [prompt + codec.decode(r) for r in rows]
        out = Samples(texts[0] if len(texts) == 1 else texts, lines=list(texts))
        path = output_path(inputs["out"], "digits.txt")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(texts) + "\n")
            out.files.append(path)
            out.lines.append(f"wrote {path}")
        return out

    def render_training_samples(self, module: Any, datamodule: Any, sampling: SamplingConfig, out_dir: Path,
                                step: int) -> SampleSet:
        samples = self.generate(module.model, module.codec, {"prompt": "3", "out": out_dir / f"step_{step}.txt"},
                                sampling)
        return SampleSet(texts=[("3", t[1:]) for t in samples.lines[:-1]])
