"""Music Transformer: a causal decoder over music events with relative self-attention.

Huang et al. 2018, "Music Transformer: Generating Music with Long-Term Structure". The network is
the GPT-2 decoder layout of `zoo.models.gpt` (pre-norm blocks, tied embeddings) whose self-attention
carries the relative position bias of `zoo.core.positions` (`bias="relative"` in the config: a
`RelativePositionBias`, run by the `chunked` kernel that `kernel="auto"` picks for it): every layer and
head learns one embedding per relative distance (section 3), built into the logits with the paper's
memory-efficient skew. By default the model has no absolute position signal at all (`position="none"`):
what it knows about order comes from the relative embeddings, so a phrase means the same wherever it
starts, which is what lets the paper's model continue a primer beyond the lengths it was trained on
(section 5) and what makes sliding-window generation exact in the model's own terms (`zoo.members.music`).

The baseline of the paper's ablation, a Transformer with absolute positions, is the same class with
`bias="none", position="learned"` (or `"rotary"`): one field per axis, no second model class.
`max_relative_position` (L) defaults to `block_size`; distances >= L get a zero embedding (see
`zoo.core.positions.relative_logits`). The relative tables cost n_layer · L · n_embd parameters, learned
positions block_size · n_embd, which matters when the two are compared at equal size
(benchmarks/music_ablation.py).

Tokens are a music codec's ids: `PerformanceCodec` (zoo/codecs/midi.py, 388 events + PAD/BOS/EOS) or
`JSBGridCodec` (zoo/codecs/jsb.py, one token per voice per 16th step). `vocab_size` is left null in
conf/model/music_transformer.yaml and taken from the codec. Training convention as GPT's:
`logits[:, t]` predicts `idx[:, t + 1]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.models.base import register
from zoo.models.gpt import GPT, AttentionBiasKind, GPTConfig, Position


@dataclass(kw_only=True)
class MusicTransformerConfig(GPTConfig):
    """GPTConfig with the Music Transformer's defaults (relative attention, no absolute positions).

    Sizes follow the paper's smaller JSB/piano settings scaled for a single GPU; the CPU recipes in
    conf/experiment/music_transformer_*.yaml shrink them.
    """

    vocab_size: int = 391  # PerformanceCodec's default vocabulary; training sets it from the codec
    block_size: int = 512
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    dropout: float = 0.1
    position: Position = "none"
    bias: AttentionBiasKind = "relative"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bias == "none" and self.position == "none":
            raise ValueError("MusicTransformerConfig: bias='none' with position='none' gives the model no position "
                             "information; use bias='relative' (the Music Transformer), 'alibi' or "
                             "'relative+alibi', or position='learned' / 'rotary' (the absolute-position baseline)")


@register("music_transformer", MusicTransformerConfig)
class MusicTransformer(GPT):
    """GPT's decoder under its own type name, so checkpoints, configs and `zoo-sample` say what it is.

    Module names (and so checkpoint keys) are GPT's: `transformer.wte`, `transformer.h.N.attn.er`
    (the relative embeddings, (H, L, D) per layer), `transformer.ln_f`, `lm_head`.
    """

    config: MusicTransformerConfig

    def __init__(self, config: MusicTransformerConfig) -> None:
        if not isinstance(config, MusicTransformerConfig):
            raise TypeError(f"MusicTransformer needs a MusicTransformerConfig, got {type(config).__name__}")
        super().__init__(config)
