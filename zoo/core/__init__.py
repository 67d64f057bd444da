"""The shared core every model is built from: MultiHeadAttention and its kernels, position schemes, KV
cache (`attention.py`); pre-norm blocks, MLPs, norms, position embeddings (`layers.py`). Knows no model,
no training, no Hydra."""
