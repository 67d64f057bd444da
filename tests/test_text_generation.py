import pytest
import torch

from zoo.codecs.text import BPECodec, CharCodec
from zoo.members.text import generate_text
from zoo.models import GPT, GPTConfig

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 20


def _model(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()


def test_streamed_text_equals_returned_text():
    codec = CharCodec.fit(TEXT)
    pieces: list[str] = []
    [(prompt, text)] = generate_text(_model(codec.vocab_size), codec, ["the "], max_new_tokens=30, seed=3,
                                     on_text=pieces.append)
    assert prompt == "the " and len(text) == 30 and "".join(pieces) == text


def test_streaming_never_splits_a_multibyte_character():
    codec = BPECodec.fit([TEXT + "héllo wörld ✓ 中文 " * 10], vocab_size=300)
    pieces: list[str] = []
    [(_, text)] = generate_text(_model(codec.vocab_size), codec, ["h"], max_new_tokens=40, seed=0,
                                on_text=pieces.append, temperature=2.0)
    assert "".join(pieces) == text  # byte-level tokens reassembled into whole characters


def test_stop_string_cuts_the_sample_and_ends_generation():
    codec = CharCodec.fit(TEXT)
    model = _model(codec.vocab_size)
    [(_, free)] = generate_text(model, codec, ["the"], max_new_tokens=40, seed=5, temperature=3.0)
    stop = free[5:7]  # a string the sample is known to reach
    [(_, cut)] = generate_text(model, codec, ["the"], max_new_tokens=40, seed=5, temperature=3.0, stop=[stop])
    assert cut == free[: free.index(stop)]


def test_num_samples_per_prompt_and_unknown_characters():
    codec = CharCodec.fit(TEXT)
    out = generate_text(_model(codec.vocab_size), codec, ["the", "a"], num_samples=2, max_new_tokens=5, seed=0)
    assert [p for p, _ in out] == ["the", "the", "a", "a"]
    with pytest.raises(ValueError, match="Z"):
        generate_text(_model(codec.vocab_size), codec, ["Zebra"], max_new_tokens=5)


def test_generation_longer_than_the_context_slides_a_window():
    codec = CharCodec.fit(TEXT)
    model = _model(codec.vocab_size)  # context of 64 characters
    pieces: list[str] = []
    [(_, text)] = generate_text(model, codec, ["the quick "], max_new_tokens=150, seed=0, on_text=pieces.append)
    assert len(text) == 150 and "".join(pieces) == text
    [(_, again)] = generate_text(model, codec, ["the quick "], max_new_tokens=150, seed=0)
    assert again == text  # deterministic under a seed
