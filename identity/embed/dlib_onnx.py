"""dlib's face descriptor network as an ONNX graph, so onnxruntime runs it (batched, on any
execution provider) instead of dlib's own CPU loop.

``dlib_face_recognition_resnet_model_v1.dat`` is dlib's serialisation of the ``anet_type`` of
dlib's ``dnn_face_recognition_ex.cpp``: a 29-conv ResNet on 150x150 RGB chips. The file stores the
layers from the input up; each layer's details start with its type name ("con_4", "affine_",
"relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2"), followed by dlib's encoding:

- integers: one control byte (low nibble = byte count, bit 7 = negative), then the magnitude's
  bytes, little-endian;
- floats outside tensors: a (mantissa, exponent) pair of such integers;
- tensors (``params``): version 2, four dims, then raw little-endian float32.

The topology (which layers form a residual block, where the shortcut is pooled) is fixed by that
C++ type and is rebuilt here; the weights, strides and paddings are read from the file. Two dlib
semantics matter for exact outputs: a convolution or pooling with stride 2 has no padding, and
``add_prev`` of two tensors of different shape zero-pads the smaller one at the high end (the
down-sampling blocks add a 3x3 result to a 4x4 pooled shortcut, and 64 channels to 32).
``convert`` is checked against dlib's own descriptors in tests/identity/test_embed_dlib.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identity.errors import ModelError

_LAYER_NAME = re.compile(
    rb"\x01[\x04-\x20](con_4|affine_|relu_|max_pool_2|avg_pool_2|add_prev_|fc_2|input_rgb_image_sized)"
)
# residual blocks from the input up: (channels, down-sampling) as in dnn_face_recognition_ex.cpp
_BLOCKS = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
_BLOCKS += [(256, True)] + [(256, False)] * 2 + [(256, True)]


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.pos = data, offset

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def str(self) -> str:
        n = self.int()
        text = self.data[self.pos : self.pos + n].decode("ascii")
        self.pos += n
        return text

    def float(self) -> float:
        mantissa = self.int()
        return float(mantissa * 2.0 ** self.int())

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise ValueError("unknown tensor version")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return values


@dataclass
class _Layer:
    kind: str
    params: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    ints: list[int] = field(default_factory=list)


def parse_layers(data: bytes) -> tuple[np.ndarray, list[_Layer]]:
    """The input layer's per-channel means (RGB) and every layer after it, input side first."""
    layers: list[_Layer] = []
    means = None
    for match in _LAYER_NAME.finditer(data):
        r = _Reader(data, match.start())
        kind = r.str()
        if kind == "input_rgb_image_sized":
            means = np.array([r.float() for _ in range(3)], np.float32)
        elif kind in ("con_4", "affine_"):
            params = r.tensor()
            ints = [r.int() for _ in range(7)] if kind == "con_4" else []
            layers.append(_Layer(kind, params, ints))
        elif kind in ("max_pool_2", "avg_pool_2"):
            layers.append(_Layer(kind, ints=[r.int() for _ in range(6)]))
        elif kind == "fc_2":
            outputs, inputs = r.int(), r.int()
            layers.append(_Layer(kind, r.tensor(), [outputs, inputs]))
        else:
            layers.append(_Layer(kind))
    if means is None:
        raise ValueError("no input layer")
    return means, layers


class _Graph:
    """A small ONNX graph builder that tracks static NCHW shapes (the input is 150x150)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self.n = 0

    def name(self, what: str) -> str:
        self.n += 1
        return f"{what}_{self.n}"

    def const(self, array: np.ndarray, what: str) -> str:
        from onnx import numpy_helper

        name = self.name(what)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, int, int], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, layer: _Layer) -> str:
        filters, rows, cols, sy, sx, py, px = layer.ints
        c, h, w = self.shapes[x]
        weight_count = filters * c * rows * cols
        w_t = layer.params[:weight_count].reshape(filters, c, rows, cols)
        b_t = layer.params[weight_count : weight_count + filters]
        shape = (filters, (h + 2 * py - rows) // sy + 1, (w + 2 * px - cols) // sx + 1)
        return self.node(
            "Conv",
            [x, self.const(w_t, "w"), self.const(b_t, "b")],
            shape,
            kernel_shape=[rows, cols],
            strides=[sy, sx],
            pads=[py, px, py, px],
        )

    def affine(self, x: str, layer: _Layer) -> str:
        c = self.shapes[x][0]
        gamma = layer.params[:c].reshape(1, c, 1, 1)
        beta = layer.params[c : 2 * c].reshape(1, c, 1, 1)
        scaled = self.node("Mul", [x, self.const(gamma, "gamma")], self.shapes[x])
        return self.node("Add", [scaled, self.const(beta, "beta")], self.shapes[x])

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.shapes[x])

    def pool(self, x: str, layer: _Layer, op: str) -> str:
        rows, cols, sy, sx, py, px = layer.ints
        c, h, w = self.shapes[x]
        shape = (c, (h + 2 * py - rows) // sy + 1, (w + 2 * px - cols) // sx + 1)
        return self.node(
            op, [x], shape, kernel_shape=[rows, cols], strides=[sy, sx], pads=[py, px, py, px]
        )

    def pad_to(self, x: str, shape: tuple[int, int, int]) -> str:
        have = self.shapes[x]
        if have == shape:
            return x
        extra = [0, 0, 0, 0, 0, shape[0] - have[0], shape[1] - have[1], shape[2] - have[2]]
        return self.node("Pad", [x, self.const(np.array(extra, np.int64), "pads")], shape)

    def add_padded(self, a: str, b: str) -> str:
        shape = tuple(max(p, q) for p, q in zip(self.shapes[a], self.shapes[b], strict=True))
        return self.node("Add", [self.pad_to(a, shape), self.pad_to(b, shape)], shape)  # type: ignore[arg-type]


def convert(dat: bytes) -> bytes:
    """The serialised ONNX model: ``input`` (N, 150, 150, 3) uint8-valued float RGB chips ->
    ``descriptor`` (N, 128), equal to dlib's ``compute_face_descriptor`` up to float rounding."""
    try:
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise ModelError(
            "converting the dlib model needs the onnx package: pip install onnx"
        ) from exc
    try:
        means, layers = parse_layers(dat)
    except (ValueError, IndexError) as exc:
        raise ModelError(f"not a dlib face descriptor network: {exc}") from exc
    g = _Graph()
    # dlib's input_rgb_image: (pixel - mean) / 256 per channel, NHWC chips -> NCHW
    nchw = g.node("Transpose", ["input"], (3, 150, 150), perm=[0, 3, 1, 2])
    centred = g.node("Sub", [nchw, g.const(means.reshape(1, 3, 1, 1), "mean")], (3, 150, 150))
    x = g.node("Mul", [centred, g.const(np.array(1 / 256, np.float32), "scale")], (3, 150, 150))
    it = iter(layers)

    def take(kind: str) -> _Layer:
        layer = next(it)
        if layer.kind != kind:
            raise ModelError(f"unexpected dlib layer {layer.kind} where {kind} belongs")
        return layer

    def relu(x: str) -> str:
        take("relu_")
        return g.relu(x)

    x = g.pool(
        relu(g.affine(g.conv(x, take("con_4")), take("affine_"))), take("max_pool_2"), "MaxPool"
    )
    for _channels, down in _BLOCKS:
        shortcut = x
        y = relu(g.affine(g.conv(x, take("con_4")), take("affine_")))
        y = g.affine(g.conv(y, take("con_4")), take("affine_"))
        if down:
            shortcut = g.pool(shortcut, take("avg_pool_2"), "AveragePool")
        take("add_prev_")
        x = relu(g.add_padded(y, shortcut))
    take("avg_pool_2")  # avg_pool_everything
    c = g.shapes[x][0]
    pooled = g.node("GlobalAveragePool", [x], (c, 1, 1))
    flat = g.node("Flatten", [pooled], (c, 1, 1), axis=1)
    fc = take("fc_2")
    outputs, inputs = fc.ints
    weights = fc.params.reshape(inputs, outputs)  # dlib's fc: output = input . W
    out = g.node("MatMul", [flat, g.const(weights, "fc")], (outputs, 1, 1))
    g.nodes.append(helper.make_node("Identity", [out], ["descriptor"]))
    graph = helper.make_graph(
        g.nodes,
        "dlib_resnet_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 150, 150, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", outputs])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
