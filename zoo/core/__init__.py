"""The shared core every model is built from. Knows no model, no training, no Hydra.

    kernels.py    the softmax core, one signature `kernel(q, k, v, *, bias, causal, dropout_p, scale)`:
                  math (the reference, the oracle in tests), sdpa, chunked (query chunks; a fused
                  matrix-product path on CPU); one registry, resolved once when a module is built
    positions.py  position schemes: rotary (rotates q, k), bias providers (`PositionBias`; the Music
                  Transformer's relative attention with the skew and its static-cache lookup); learned
                  absolute positions are an input embedding each model owns (`wpe`)
    norms.py      RMSNorm (blocks; per head on q, k with qk_norm), make_norm
    attention.py  MultiHeadAttention: projections, heads, KV cache, one kernel, an optional position bias
    cache.py      KVCache: preallocated per-layer buffers, dynamic or static (fixed-shape, compilable)
    layers.py     pre-norm blocks, MLPs (GELU, ReLU², SwiGLU), logit soft-capping, the (in, out) weight
                  copies for CPU decoding

Each imports only those above it in this order: kernels, positions, cache, norms,
attention, layers.
"""
