"""zoo-train's own config sections as dataclasses: the schema of conf/train.yaml's top level, `module`
and `checkpoint` (the model, data, trainer and samples sections are checked against what consumes
them: zoo/training/preflight.py). Types are checked by `zoo.config.check_fields`, ranges here, so a
config built from Python fails as a command-line override does. No Lightning import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zoo.config import bad_value, check_fields


@dataclass(kw_only=True)
class ModuleConfig:
    """The `module` section: what GenerativeModule needs besides the model and codec."""

    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.1  # on matrices and embeddings only; not biases and norm gains
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100  # linear warmup, then cosine decay to min_lr_ratio · lr at max_steps
    min_lr_ratio: float = 0.1
    on_nonfinite: Literal["raise", "skip"] = "raise"  # a NaN/inf training loss stops the run, or skips the step
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~1/3 more compute

    def __post_init__(self) -> None:
        check_fields(self)
        checks = {"lr": (self.lr > 0, "must be > 0"), "weight_decay": (self.weight_decay >= 0, "must be >= 0"),
                  "warmup_steps": (self.warmup_steps >= 0, "must be >= 0"),
                  "min_lr_ratio": (0 <= self.min_lr_ratio <= 1, "must be in [0, 1]"),
                  "betas": (all(0 <= b < 1 for b in self.betas), "must be two numbers in [0, 1)")}
        for name, (ok, problem) in checks.items():
            if not ok:
                raise bad_value(type(self).__name__, name, getattr(self, name), problem)
        self.betas = tuple(self.betas)  # a YAML list


@dataclass(kw_only=True)
class CheckpointConfig:
    every_n_steps: int = 200  # also saved at the end of training and on interruption; 0 = only then

    def __post_init__(self) -> None:
        check_fields(self)
        if self.every_n_steps < 0:
            raise bad_value(type(self).__name__, "every_n_steps", self.every_n_steps,
                            "must be >= 0 (0 = only at the end and on interruption)")


@dataclass(kw_only=True)
class RunConfig:
    """conf/train.yaml's top-level keys (the sections besides `checkpoint` are checked on their own)."""

    name: str = "run"  # the run folder's name: runs/<name>
    run_dir: str | None = None  # None = Hydra's run dir
    seed: int = 1337
    ckpt_path: str | None = "last"  # "last" = resume from the run's last.ckpt if present; None = fresh; a path
    init_from: str | None = None  # start from a pretrained model's weights: anything zoo.load accepts
    compile: bool = False  # torch.compile the model in place (checkpoint keys unchanged)
    threads: int | None = None  # torch.set_num_threads; None or 0 = torch's default
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.threads is not None and self.threads < 0:
            raise bad_value(type(self).__name__, "threads", self.threads,
                            "must be >= 1 (or null / 0 for torch's default)")
