"""ImageGPT in zoo against transformers: sampling seconds per image (KV caches) and likelihood in colour-cluster space.

    PYTHONPATH=. python benchmarks/imagegpt.py [--rounds 5] [--batch 4] [--threads 1]
    PYTHONPATH=. python benchmarks/imagegpt.py --model imagegpt-small --images DIR   # needs the Hub once

Issue 28. Without `--model`, one random ImageGPT of the real geometry (32×32 images, 512 colour clusters + the
start token, 1024 positions) but small (4 layers, 128 wide, 4 heads) is built with transformers
(`ImageGPTForCausalImageModeling`), saved, and loaded by zoo from that folder: the same weights on both sides.
With `--model NAME` (imagegpt-small, -medium, -large or a folder) the pretrained model is read by both (the first
time from the Hugging Face Hub: no network here, so the committed files are the random model's).

Speed: whole unconditional images, `--batch` per call, temperature 1 and top-k 40 on both sides (the sampling of
transformers' ImageGPT example): zoo's `zoo.sampling.sample_tokens` (its KV cache) against transformers'
`generate(do_sample=True)` from the start token (its KV cache). Interleaved rounds after one warm-up call each;
the ratio is taken within a round (transformers' seconds / zoo's) and its median over rounds reported; one thread.

Likelihood: the mean negative log-likelihood of the images' cluster tokens, in nats and bits per cluster token
(one token per pixel, 512 colours), from zoo's logits and from transformers' logits on the same tokens. It is a
figure in colour-cluster space: NOT comparable to the bits/dim of 8-bit sub-pixels (a token stands for 3
sub-pixels, and the colour quantisation has already discarded what the palette cannot show). With the random
model it only checks the two agree (a random model scores about ln 512); `--images DIR` gives a real figure
for a pretrained model. Images: every file in DIR (any size, resized and centre-cropped as zoo-sample's primer),
else `--num-images` smooth random colour fields (seeded). Writes benchmarks/imagegpt.md and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_K, TEMPERATURE = 40, 1.0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="imagegpt-small/-medium/-large or a folder; default: a random one")
    ap.add_argument("--images", type=Path, default=None, help="a folder of pictures for the likelihood")
    ap.add_argument("--num-images", type=int, default=16, help="synthetic images when --images is not given")
    ap.add_argument("--batch", type=int, default=4, help="images per sampling call")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="folder for the .md and .json")
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix): imagegpt, then each option that differs from its default."""
    from zoo.bench.common import changed_options, output_stem

    return output_stem("imagegpt", changed_options(parser(), args, ignore=["out"]))


def random_folder(folder: Path) -> Path:
    """A random ImageGPT of the real geometry, small, saved with its processor (512 seeded random clusters)."""
    import numpy as np
    import torch
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling, ImageGPTImageProcessor

    torch.manual_seed(0)
    config = ImageGPTConfig(vocab_size=513, n_positions=1024, n_embd=128, n_layer=4, n_head=4)
    ImageGPTForCausalImageModeling(config).save_pretrained(folder)
    clusters = np.random.RandomState(0).uniform(-1, 1, (512, 3)).astype(np.float32)
    ImageGPTImageProcessor(clusters=clusters, size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def images(args: argparse.Namespace, codec):  # -> (N, T) cluster tokens, what they are
    import numpy as np
    import torch

    from zoo.members.image import load_primer

    if args.images is not None:
        files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        return torch.stack([load_primer(codec, f)[0] for f in files]), f"{len(files)} pictures of {args.images}"
    rs = np.random.RandomState(1)  # smooth colour fields: bilinear blow-ups of 4×4 random colours
    small = torch.from_numpy(rs.uniform(0, 1, (args.num_images, 3, 4, 4)).astype(np.float32))
    fields = torch.nn.functional.interpolate(small, size=(codec.height, codec.width), mode="bilinear")
    return codec.images_to_tokens(fields.clamp(0, 1)), f"{args.num_images} smooth random colour fields (seed 1)"


def main() -> None:
    args = parser().parse_args()
    import torch
    from transformers import ImageGPTForCausalImageModeling
    from transformers import __version__ as hf_version

    import zoo
    from zoo.bench.common import changed_options, cpu_name, interleaved, median, ratio_stats
    from zoo.hub.registry import IMAGEGPT_REPOS
    from zoo.sampling import SamplingConfig, sample_tokens

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or str(random_folder(Path(tmp)))
        m = zoo.load(source)
        hf = ImageGPTForCausalImageModeling.from_pretrained(IMAGEGPT_REPOS.get(source, source)).eval()
    model, codec = m.model, m.codec
    t = codec.tokens_per_image
    sos = torch.full((args.batch, 1), codec.vocab_size)
    cfg = SamplingConfig(temperature=TEMPERATURE, top_k=TOP_K, seed=0)

    def zoo_sample():
        sample_tokens(model, codec, None, num=args.batch, cfg=cfg)

    def hf_sample():
        with torch.no_grad():
            hf.generate(input_ids=sos, max_length=t + 1, do_sample=True, top_k=TOP_K, temperature=TEMPERATURE,
                        pad_token_id=0)  # any id but the start token: the prompt is one start token

    times = interleaved({"zoo": zoo_sample, "transformers": hf_sample}, args.rounds)
    speed = ratio_stats(times["transformers"], times["zoo"])

    tokens, what = images(args, codec)
    with torch.no_grad():
        logits = model(tokens)  # (N, T, 512): logits[:, i] predicts token i from the start token and tokens < i
        zoo_nats = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()))
        seq = torch.cat([torch.full((len(tokens), 1), codec.vocab_size), tokens[:, :-1]], 1)  # the start token first
        hf_nats = float(torch.nn.functional.cross_entropy(hf(seq).logits.flatten(0, 1), tokens.flatten()))
    result = {
        "command": "python benchmarks/imagegpt.py" + "".join(f" --{k.replace('_', '-')} {v}" for k, v in
                                                             changed_options(parser(), args, ["out"]).items()),
        "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "transformers": hf_version,
        "python": platform.python_version(), "model": args.model or "random ImageGPT (4 layers, 128 wide, 4 heads; "
        "32x32, 512 clusters)", "parameters": sum(p.numel() for p in model.parameters()),
        "batch": args.batch, "rounds": args.rounds,
        "seconds_per_image": {k: median(v) / args.batch for k, v in times.items()},
        "transformers_over_zoo": {k: speed[k] for k in ("median", "min", "max", "rounds")},
        "likelihood_images": what,
        "nats_per_cluster_token": {"zoo": zoo_nats, "transformers": hf_nats},
        "bits_per_cluster_token": {"zoo": zoo_nats / math.log(2), "transformers": hf_nats / math.log(2)},
        "uniform_bits_per_cluster_token": math.log2(codec.vocab_size),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = stem(args)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    s, b = r["seconds_per_image"], r["bits_per_cluster_token"]
    return f"""# ImageGPT: zoo against transformers (issue 28)

Command: `{r['command']}`. CPU: {r['cpu']}, {r['threads']} thread(s); torch {r['torch']}, transformers
{r['transformers']}. Model: {r['model']}, {r['parameters']:,} parameters, the same weights on both sides.

## Sampling speed (whole 32x32 images, KV cache, temperature 1, top-k 40, {r['batch']} images per call)

| | seconds per image (median of {r['rounds']} rounds) |
|---|---|
| zoo (`zoo.sampling.sample_tokens`) | {s['zoo']:.3f} |
| transformers (`generate`, do_sample) | {s['transformers']:.3f} |

transformers' time / zoo's, per round: median {r['transformers_over_zoo']['median']:.2f}x (min
{r['transformers_over_zoo']['min']:.2f}x, max {r['transformers_over_zoo']['max']:.2f}x).

## Likelihood in colour-cluster space

On {r['likelihood_images']}: {r['nats_per_cluster_token']['zoo']:.4f} nats = **{b['zoo']:.4f} bits per
cluster token** from zoo's logits; from transformers' logits on the same tokens: {b['transformers']:.4f} bits.
A uniform guess over the palette is {r['uniform_bits_per_cluster_token']:.4f} bits. One token is one pixel's
nearest colour among 512: these are bits per cluster token, not bits/dim of 8-bit sub-pixels, and the two are
not comparable (a token stands for three sub-pixels, and the quantisation to the palette has already dropped
what it cannot show). With the random model the figure only shows that zoo and transformers agree; a
pretrained figure needs the Hub once: `python benchmarks/imagegpt.py --model imagegpt-small --images DIR`.
"""


if __name__ == "__main__":
    main()
