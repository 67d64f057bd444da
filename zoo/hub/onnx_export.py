"""ONNX export of any zoo member: the full-sequence forward `(idx, cond) -> logits`, run by ONNX Runtime.

    import zoo
    from zoo.hub.onnx_export import export_onnx, check_onnx
    path = export_onnx(zoo.load("gpt-pydoc"), "gpt-pydoc.onnx")
    check_onnx(zoo.load("gpt-pydoc"), path)          # max |logits difference| vs PyTorch; ValueError past 1e-4
    zoo-export checkpoint=last.ckpt out=DIR format=onnx   # the usual folder plus DIR/model.onnx

The graph has inputs `idx` (int64 (B, T) token ids) and, for a model that takes a condition, `cond` (int64:
class ids (B,) for a class-conditional model, caption ids (B, L) for text2image; the model's
`null_condition` is its "no condition") and one output `logits` (float32 (B, T', V), T' = T except for
text2image, whose rows are the module docstring's joint layout, -inf where a row's other vocabulary is).
Batch and sequence axes are dynamic: any B >= 1 and 1 <= T <= the model's context.

How: `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript), the exporter torch 2.9+ makes the
default; the TorchScript tracer (dynamo=False) baked Python integers derived from the example's length into
the graph (ImageGPT's patch count, the relative-attention skew's reshape), so its graphs were right only at the
example length. The model is rebuilt with the `math` kernel, the reference every kernel equals (zoo.core.kernels);
the `chunked` kernel's Python loop over query blocks would be unrolled at the example's length. Weights are
float32 whatever the checkpoint's dtype. Needs `pip install 'zoo[onnx]'` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.hub.pretrained import Pretrained
from zoo.models.base import build_model

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4  # max |ONNX Runtime logits - PyTorch logits| accepted by check_onnx (float32 both sides)
_INSTALL = "pip install 'zoo[onnx]'"


def require(*modules: str) -> None:
    """ImportError naming the install when one of `modules` is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: {_INSTALL}")


class _Forward(nn.Module):
    """The traced signature: positional (idx[, cond]) -> logits, no cache."""

    def __init__(self, model: nn.Module, conditional: bool) -> None:
        super().__init__()
        self.model, self.conditional = model, conditional

    def forward(self, idx: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.model(idx, cond=cond if self.conditional else None).float()


def _model(m: Pretrained | nn.Module) -> nn.Module:
    return m.model if isinstance(m, Pretrained) else m


def reference_model(m: Pretrained | nn.Module) -> nn.Module:
    """A float32 CPU copy of the model running the `math` kernel (what is exported), in eval mode."""
    model = _model(m)
    config = dataclasses.asdict(model.config)
    copy = build_model(model.model_type, config | {"kernel": "math"} if "kernel" in config else config)
    copy.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    return copy.float().eval()


def context(model: nn.Module) -> int:
    """Longest sequence the exported graph takes: the model's context (a sliding-window GPT: its block_size)."""
    return min(model.max_len, getattr(model.config, "block_size", model.max_len))


def example_inputs(model: nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, Tensor]:
    """Random valid inputs: token ids (B, T) and, for a conditional model, a condition like its null one
    (class ids: random classes or none; captions: random ids or padding)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"idx": torch.randint(0, model.config.vocab_size, (batch, length), generator=g)}
    null = model.null_condition(batch, "cpu")
    if null is not None:
        inputs["cond"] = torch.randint(0, int(null.max()) + 1, tuple(null.shape), generator=g)
    return inputs


def export_onnx(m: Pretrained | nn.Module, path: str | Path, *, opset: int = 18) -> Path:
    """Write the model's forward as an ONNX file at `path` (see the module docstring); returns the path."""
    require("onnx", "onnxscript")
    model = reference_model(m)
    inputs = example_inputs(model, batch=2, length=min(context(model), 16))
    conditional = "cond" in inputs
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=1, max=context(model))
    shapes: dict[str, Any] = {"idx": {0: batch, 1: seq}}
    if conditional:
        shapes["cond"] = {0: batch}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(_Forward(model, conditional).eval(), tuple(inputs.values()), dynamo=True,
                                    input_names=list(inputs), output_names=["logits"], dynamic_shapes=shapes,
                                    opset_version=opset, verbose=False)
    program.save(str(path))  # one file: the shipped models' weights are far below protobuf's 2 GB limit
    return path


def run_onnx(path: str | Path, inputs: dict[str, Tensor]) -> Tensor:
    """Logits from ONNX Runtime (CPU) for `inputs` as `example_inputs` makes them."""
    require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return torch.from_numpy(session.run(["logits"], {k: v.numpy() for k, v in inputs.items() if k in names})[0])


def logits_difference(reference: Tensor, other: Tensor) -> float:
    """max |difference| over the finite logits; inf where the two disagree on which logits are -inf
    (text2image's joint layout) or on the shape."""
    if reference.shape != other.shape:
        return float("inf")
    finite = torch.isfinite(reference)
    if not torch.equal(finite, torch.isfinite(other)):
        return float("inf")
    return float((reference[finite] - other[finite]).abs().max())


def check_onnx(m: Pretrained | nn.Module, path: str | Path, *, shapes: tuple[tuple[int, int], ...] | None = None,
               tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Largest |logits difference| between ONNX Runtime and the PyTorch model (float32, as loaded, its own
    kernel) over random inputs of each (batch, length) in `shapes` (default: 2 x the context, 3 x an odd
    length, 1 x 1); ValueError past `tolerance`."""
    model = _model(m)
    reference = reference_model(model)  # for a model that is not float32 on CPU: compared in float32
    n = context(reference)
    shapes = shapes or ((2, n), (3, max(1, n // 2 - 3)), (1, 1))
    worst = 0.0
    for b, t in shapes:
        inputs = example_inputs(reference, b, t, seed=seed)
        with torch.no_grad():
            expected = (model if _is_float32_cpu(model) else reference)(inputs["idx"], cond=inputs.get("cond"))
        worst = max(worst, logits_difference(expected.float(), run_onnx(path, inputs)))
    if not worst <= tolerance:
        raise ValueError(f"{path}: ONNX Runtime logits differ from PyTorch's by {worst:.3g} > {tolerance}")
    return worst


def _is_float32_cpu(model: nn.Module) -> bool:
    p = next(model.parameters())
    return p.dtype == torch.float32 and p.device.type == "cpu"
