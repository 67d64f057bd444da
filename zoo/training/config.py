"""zoo-train's own config sections as dataclasses: the schema of conf/train.yaml's top level, `module`
and `checkpoint` (the model, data, trainer and samples sections are checked against what consumes
them: zoo/training/preflight.py). Types are checked by `zoo.config.check_fields`, ranges here, so a
config built from Python fails as a command-line override does. No Lightning import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zoo.config import bad_value, build, check_fields, check_value


@dataclass(kw_only=True)
class ModuleConfig:
    """The `module` section: what GenerativeModule needs besides the model and codec."""

    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.1  # on matrices and embeddings only; not biases and norm gains
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100  # linear warmup, then the schedule's decay to min_lr_ratio · lr at max_steps
    min_lr_ratio: float = 0.1
    # cosine: decay from the end of warmup to max_steps. wsd (warmup-stable-decay): constant, then a linear
    # decay over the last decay_fraction of max_steps; a run resumed with a larger max_steps keeps the
    # rates of the steps it took in the stable phase (its decay simply starts later)
    schedule: Literal["cosine", "wsd"] = "cosine"
    decay_fraction: float = 0.2  # wsd only
    on_nonfinite: Literal["raise", "skip"] = "raise"  # a NaN/inf training loss stops the run, or skips the step
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~1/3 more compute

    def __post_init__(self) -> None:
        check_fields(self)
        checks = {"lr": (self.lr > 0, "must be > 0"), "weight_decay": (self.weight_decay >= 0, "must be >= 0"),
                  "warmup_steps": (self.warmup_steps >= 0, "must be >= 0"),
                  "min_lr_ratio": (0 <= self.min_lr_ratio <= 1, "must be in [0, 1]"),
                  "decay_fraction": (0 < self.decay_fraction <= 1, "must be in (0, 1] (the share of max_steps "
                                     "that module.schedule=wsd spends decaying)"),
                  "betas": (all(0 <= b < 1 for b in self.betas), "must be two numbers in [0, 1)")}
        for name, (ok, problem) in checks.items():
            if not ok:
                raise bad_value(type(self).__name__, name, getattr(self, name), problem)
        self.betas = tuple(self.betas)  # a YAML list


@dataclass(kw_only=True)
class AdamWConfig:
    """`optim=adamw` (conf/optim/adamw.yaml): torch's AdamW with the `module` section's lr, betas and
    weight decay on every trainable parameter (zoo.training.optim)."""

    name: Literal["adamw"] = "adamw"

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(kw_only=True)
class MuonConfig:
    """`optim=muon` (conf/optim/muon.yaml): Muon on the blocks' hidden matrices, AdamW on the rest
    (zoo.training.optim.parameter_groups). The Muon fields are torch.optim.Muon's arguments."""

    name: Literal["muon"] = "muon"
    lr: float = 0.02  # Muon's peak rate (the schedule scales it as it scales AdamW's)
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5  # Newton–Schulz iterations
    ns_dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 where the device has fast bf16 matmuls
    weight_decay: float = 0.0  # decoupled, on the Muon matrices
    adjust_lr_fn: Literal["original", "match_rms_adamw", "spectral_unclamped"] | None = None  # None = original
    adamw_lr: float | None = None  # AdamW side (embeddings, heads, norms, biases); None = module.lr
    adamw_betas: tuple[float, float] | None = None  # None = module.betas
    adamw_weight_decay: float | None = None  # None = module.weight_decay

    def __post_init__(self) -> None:
        check_fields(self)
        checks = {"lr": self.lr > 0, "momentum": 0 <= self.momentum < 1, "ns_steps": 1 <= self.ns_steps < 100,
                  "weight_decay": self.weight_decay >= 0, "adamw_lr": self.adamw_lr is None or self.adamw_lr > 0,
                  "adamw_weight_decay": self.adamw_weight_decay is None or self.adamw_weight_decay >= 0,
                  "adamw_betas": self.adamw_betas is None or all(0 <= b < 1 for b in self.adamw_betas)}
        problems = {"lr": "must be > 0", "momentum": "must be in [0, 1)", "ns_steps": "must be in [1, 99]",
                    "weight_decay": "must be >= 0", "adamw_lr": "must be > 0 (or null: module.lr)",
                    "adamw_weight_decay": "must be >= 0 (or null: module.weight_decay)",
                    "adamw_betas": "must be two numbers in [0, 1) (or null: module.betas)"}
        for name, ok in checks.items():
            if not ok:
                raise bad_value(type(self).__name__, name, getattr(self, name), problems[name])
        if self.adamw_betas is not None:
            self.adamw_betas = tuple(self.adamw_betas)


OPTIMIZERS: dict[str, type] = {"adamw": AdamWConfig, "muon": MuonConfig}


def optim_config(values: Mapping[str, Any] | None) -> AdamWConfig | MuonConfig:
    """The `optim` section as its dataclass, chosen by `optim.name` (absent, as in configs written before
    the group existed: adamw). Every error is a ConfigError naming `optim.KEY` and the accepted values."""
    values = dict(values or {"name": "adamw"})
    check_value("optim", "name", values.get("name"), Literal[tuple(OPTIMIZERS)])
    return build(OPTIMIZERS[values["name"]], values, section="optim")


@dataclass(kw_only=True)
class CheckpointConfig:
    every_n_steps: int = 200  # also saved at the end of training and on interruption; 0 = only then
    # a save that fails (full disk, read-only folder): the previous file is kept either way; stop the run
    # (stop), or log one warning and train on (warn: a long run outlives a disk filled for a while)
    on_error: Literal["stop", "warn"] = "stop"

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
