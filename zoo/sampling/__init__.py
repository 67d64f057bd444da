"""One autoregressive loop for every zoo model.

`generate` drives any `GenerativeModel` through `prefill` / `decode_step` (KV cache) or, with
`use_cache=False`, by recomputing the whole prefix each step (the reference the tests compare with).

Prompts of different lengths share one batch without padding: all rows are prefilled with the
shortest prompt, then rows that still have prompt tokens are teacher-forced (their prompt token is
fed instead of a sample) until their prompt is used up. Positions stay aligned, so learned,
rotary and relative position schemes are all exact.

Logits are processed in this order: guidance, repetition penalty, temperature, then top-k, top-p
(nucleus, Holtzman et al. 2020: the smallest set of most probable tokens whose mass reaches p) and
min-p (keep tokens with p >= min_p · p_max), each filter seeing the previous one's output.

`generate(..., draft="ngram")` or `draft_model=SMALL_MODEL` decodes speculatively (`zoo.sampling.speculative`:
the same greedy tokens, the same sampled distribution, fewer model passes).

`sample_tokens` (images from class ids, or completions of a prefix) and `sample_images` (images from
captions) are the conditional calls of this loop that the members, the hub and `zoo.eval` share.
"""

from zoo.sampling.config import OPTIONS, RENAMED, SamplingConfig
from zoo.sampling.images import sample_images, sample_tokens
from zoo.sampling.loop import COMPILE_LENGTH_STEP, apply_repetition_penalty, filter_logits, generate, generate_sliding
from zoo.sampling.speculative import SpeculativeStats, generate_speculative

__all__ = ["COMPILE_LENGTH_STEP", "OPTIONS", "RENAMED", "SamplingConfig", "apply_repetition_penalty",
           "SpeculativeStats", "filter_logits", "generate", "generate_sliding", "generate_speculative", "sample_images",
           "sample_tokens"]
