"""Export to other runtimes: ONNX (every member, ONNX Runtime logits within 1e-4 of PyTorch's) and GGUF
(GPT-architecture models: the gguf reader gives back the weights exactly; llama.cpp's logits and tokenizer
agree with zoo's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_hub import tiny_ckpt  # noqa: F401  (a module-scoped fixture: a 2-step tiny GPT run)

import zoo
from zoo.models.base import build_model

pytest.importorskip("onnxscript", reason="ONNX export needs pip install 'zoo[onnx]'")
pytest.importorskip("onnxruntime", reason="ONNX export needs pip install 'zoo[onnx]'")
gguf = pytest.importorskip("gguf", reason="GGUF export needs pip install 'zoo[gguf]'")

from zoo.hub.gguf_export import check_gguf, export_gguf, read_gguf, vocabulary  # noqa: E402
from zoo.hub.onnx_export import TOLERANCE, check_onnx, example_inputs, export_onnx, run_onnx  # noqa: E402

SHIPPED = ["gpt-pydoc", "image-gpt-digits", "music-transformer-jsb", "text2image-digits"]
llama_cpp = pytest.mark.skipif(__import__("importlib").util.find_spec("llama_cpp") is None,
                               reason="llama.cpp's bindings: pip install llama-cpp-python")


def tiny_music_transformer() -> torch.nn.Module:
    """Relative attention (the skew) and no absolute positions: the hardest graph for a dynamic length."""
    torch.manual_seed(0)
    return build_model("music_transformer", dict(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16,
                                                 dropout=0.0)).eval()


def test_onnx_graph_takes_any_batch_and_length_with_pytorch_logits(tmp_path):
    model = tiny_music_transformer()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert check_onnx(model, path, shapes=((2, 24), (3, 7), (1, 1), (5, 13))) <= TOLERANCE
    broken = tiny_music_transformer()
    with torch.no_grad():
        broken.transformer.h[1].attn.er.normal_(std=1.0)  # another relative table: the check must notice
    with pytest.raises(ValueError, match="ONNX Runtime logits differ from PyTorch's by"):
        check_onnx(broken, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_export_of_each_shipped_member_matches_pytorch(name, tmp_path):
    m = zoo.load(name)
    path = export_onnx(m, tmp_path / f"{name}.onnx")
    assert check_onnx(m, path) <= TOLERANCE
    inputs = example_inputs(m.model, 2, 5, seed=3)
    if "cond" in inputs:  # the condition is an input: another class / caption gives other logits
        other = dict(inputs, cond=m.model.null_condition(2))
        assert not torch.allclose(run_onnx(path, inputs), run_onnx(path, other))


def test_gguf_file_holds_the_weights_and_gpt2_metadata(tmp_path):
    m = zoo.load("gpt-pydoc")
    path = export_gguf(m, tmp_path / "m.gguf")
    meta, tensors = read_gguf(path)
    c = m.model.config
    assert meta["general.architecture"] == "gpt2" and meta["gpt2.block_count"] == c.n_layer
    assert (meta["gpt2.context_length"], meta["gpt2.embedding_length"], meta["gpt2.attention.head_count"]) == \
        (c.block_size, c.n_embd, c.n_head)
    assert meta["tokenizer.ggml.model"] == "gpt2" and len(meta["tokenizer.ggml.tokens"]) == c.vocab_size
    sd = m.model.state_dict()
    assert np.array_equal(tensors["blk.3.attn_qkv.weight"], sd["transformer.h.3.attn.c_attn.weight"].numpy())
    assert np.array_equal(tensors["position_embd.weight"], sd["transformer.wpe.weight"].numpy())
    assert "output.weight" not in tensors  # tied to token_embd, which llama.cpp then reuses
    assert "tensors equal" in check_gguf(m, path) or "llama.cpp logits" in check_gguf(m, path)
    with torch.no_grad():
        m.model.transformer.h[2].mlp.c_fc.bias.add_(1.0)
    with pytest.raises(ValueError, match=r"tensors \['blk.2.ffn_up.bias'\] differ"):
        check_gguf(m, path)


def test_char_vocabulary_spells_bytes_as_gpt2_does():
    codec = zoo.load("gpt-pydoc").codec
    tokens, merges, _, _ = vocabulary(codec, codec.vocab_size)
    assert tokens[codec.encode(" ")[0]] == "Ġ" and tokens[codec.encode("\n")[0]] == "Ċ"
    assert tokens[codec.encode("“")[0]] == "âĢľ" and {"â Ģ", "âĢ ľ"} <= set(merges)  # 3 UTF-8 bytes, 2 merges


@llama_cpp
def test_gpt2_from_hugging_face_runs_in_llama_cpp_with_pytorchs_logits(tmp_path):
    """A tiny random GPT-2 (tanh GELU, as llama.cpp computes it): the logits agree to float32 rounding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=64)).save_pretrained(
        tmp_path / "hf")
    m = zoo.load("gpt2", path=tmp_path / "hf")  # no vocab files: placeholder tokens, ids in, logits out
    path = export_gguf(m, tmp_path / "gpt2.gguf")
    assert check_gguf(m, path, tolerance=1e-4).startswith("llama.cpp logits within")


@llama_cpp
@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_llama_cpp_tokenizes_bpe_and_byte_codecs_as_zoo_does(kind, tmp_path):
    from llama_cpp import Llama

    from zoo.codecs.text import BPECodec, ByteCodec
    from zoo.hub.pretrained import Pretrained

    codec = BPECodec.fit(["the cat sat on the mat. The hat: “quoted” …"] * 20, 300) if kind == "bpe" \
        else ByteCodec(eos=True)
    model = build_model("gpt", dict(vocab_size=codec.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    path = export_gguf(Pretrained(model.eval(), codec), tmp_path / "m.gguf")
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    text = "the hat  sat on “the cat” … x\n\n y"
    assert llm.tokenize(text.encode(), add_bos=False) == codec.encode(text)
    assert llm.detokenize(codec.encode(text)).decode() == text
    assert llm.token_eos() == codec.eos_id
    llm.close()


def test_gguf_refuses_a_model_llama_cpp_gpt2_cannot_run():
    with pytest.raises(ValueError, match="format=gguf takes GPT-architecture models.*'music_transformer'"):
        export_gguf(zoo.load("music-transformer-jsb"), "unused.gguf")


@llama_cpp
def test_llama_cpp_reads_the_file_tokenizes_like_the_codec_and_gives_the_logits(tmp_path):
    from llama_cpp import Llama

    m = zoo.load("gpt-pydoc")
    path = export_gguf(m, tmp_path / "m.gguf")
    assert check_gguf(m, path).startswith("llama.cpp logits within")
    llm = Llama(model_path=str(path), n_ctx=128, verbose=False, vocab_only=True)
    text = "The “with” statement…\n  x = {'a': 1}"
    assert llm.tokenize(text.encode(), add_bos=False) == m.codec.encode(text)
    assert llm.detokenize(m.codec.encode(text)).decode() == text
    llm.close()
    with torch.no_grad():
        m.model.transformer.ln_f.weight.mul_(1.1)  # the PyTorch side moved: the logits check must fail
    with pytest.raises(ValueError, match="differ"):
        check_gguf(m, path)


def test_zoo_export_format_onnx_and_gguf_write_checked_files_beside_the_safetensors(tiny_ckpt, tmp_path):  # noqa: F811
    from test_export_cli import zoo_export

    path = zoo_export(tiny_ckpt, tmp_path / "onnx", "format=onnx")
    assert {"model.safetensors", "model.onnx", "config.json"} <= {p.name for p in path.iterdir()}
    m = zoo.load(path, dtype="float32")
    inputs = example_inputs(m.model, 2, 6)
    assert torch.allclose(run_onnx(path / "model.onnx", inputs), m(inputs["idx"]), atol=TOLERANCE, rtol=0)
    path = zoo_export(tiny_ckpt, tmp_path / "gguf", "format=gguf")
    assert "model.gguf" in {p.name for p in path.iterdir()}
    with pytest.raises(ValueError, match=r"format='tflite' is not accepted; choose one of \['safetensors', 'onnx'"):
        zoo_export(tiny_ckpt, tmp_path / "bad", "format=tflite")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


@pytest.mark.parametrize(("fmt", "hidden", "extra"), [("onnx", "onnxscript", "onnx"), ("gguf", "gguf", "gguf")])
def test_a_missing_package_stops_zoo_export_with_the_install_command(fmt, hidden, extra, monkeypatch, tmp_path):
    import sys

    from zoo.export import check_format

    monkeypatch.setitem(sys.modules, hidden, None)  # importlib.util.find_spec then finds nothing
    with pytest.raises(ImportError, match=rf"needs .*{hidden}.*: pip install 'zoo\[{extra}\]'"):
        check_format(fmt)
    assert check_format("safetensors") == "safetensors"
