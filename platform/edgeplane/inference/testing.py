"""Small ONNX models built with ``onnx.helper``, for tests, benchmarks and demos (no downloads).

* :func:`mlp`: dense layers with ReLU, ``x: float32[batch, inputs] -> y: float32[batch, outputs]``;
* :func:`cnn1d`: a 1-D CNN over sensor windows, ``x: float32[batch, channels, length] -> y[batch, classes]``;
* :func:`lookup`: ``idx: int64[batch] -> y: float32[batch, 4]``; an index out of range makes the
  run fail (a model that raises at run time for some inputs only);
* :func:`reshape_broken`: loads fine, fails every run (a version that fails its warm-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["cnn1d", "lookup", "mlp", "reshape_broken", "save"]

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime >= 1.14


def _model(nodes: list[Any], name: str, inputs: list[Any], outputs: list[Any], initializers: list[Any]) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeplane.inference.testing")
    model.ir_version = IR_VERSION
    return model


def _tensor(name: str, array: np.ndarray) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def mlp(inputs: int = 32, hidden: Sequence[int] = (128, 128), outputs: int = 8, *, seed: int = 0, shift: float = 0.0) -> Any:
    """A multi-layer perceptron; ``shift`` is added to the last bias (tells versions apart)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    sizes = [inputs, *hidden, outputs]
    nodes, inits = [], []
    current = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.1).astype(np.float32)
        last = i == len(sizes) - 2
        if last:
            bias = bias + np.float32(shift)
        inits += [_tensor(f"w{i}", w), _tensor(f"b{i}", bias)]
        out = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        current = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])
    return _model(nodes, "mlp", [x], [y], inits)


def cnn1d(channels: int = 3, length: int = 1024, filters: Sequence[int] = (32, 64, 64), kernels: Sequence[int] = (7, 5, 3),
          classes: int = 8, *, seed: int = 0) -> Any:
    """A 1-D CNN: (Conv, ReLU, MaxPool) per layer, global average pool, a dense head."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current, c_in = "x", channels
    for i, (c_out, k) in enumerate(zip(filters, kernels)):
        w = (rng.standard_normal((c_out, c_in, k)) / np.sqrt(c_in * k)).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        inits += [_tensor(f"cw{i}", w), _tensor(f"cb{i}", b)]
        nodes += [
            helper.make_node("Conv", [current, f"cw{i}", f"cb{i}"], [f"c{i}"], pads=[k // 2, k // 2]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2], strides=[2]),
        ]
        current, c_in = f"p{i}", c_out
    w = (rng.standard_normal((c_in, classes)) / np.sqrt(c_in)).astype(np.float32)
    inits += [_tensor("hw", w), _tensor("hb", np.zeros(classes, np.float32)), _tensor("flat", np.array([0, -1], np.int64))]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat"], ["feat"]),
        helper.make_node("Gemm", ["feat", "hw", "hb"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, length])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])
    return _model(nodes, "cnn1d", [x], [y], inits)


def lookup(rows: int = 10) -> Any:
    """``y[i] = table[idx[i]]``; an index outside ``[-rows, rows)`` fails the run."""
    from onnx import TensorProto, helper

    table = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    return _model([helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "lookup", [idx], [y], [_tensor("table", table)])


def reshape_broken(inputs: int = 32, outputs: int = 8) -> Any:
    """Same signature as :func:`mlp`, but every run fails (Reshape to a shape that never fits)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", inputs])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])
    shape = _tensor("bad_shape", np.array([7, 3, 11], np.int64))
    return _model([helper.make_node("Reshape", ["x", "bad_shape"], ["y"])], "broken", [x], [y], [shape])


def save(model: Any, path: Path) -> Path:
    """Write a model to ``path`` (folders created) and return the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
