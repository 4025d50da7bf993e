"""BlazeFace's full-range model made to take a photo of any size, by editing its TensorFlow Lite graph in memory.

The network is convolutional up to its last two operators, which flatten its 48x48 output grid into a list of
2,304 anchors, and its three upsampling steps are told their output size (12, 24, 48) as constants. So the same
weights can run on a whole photo shrunk once (every 4x4 input pixels still give one anchor) instead of on tiles cut
from it: no overlap computed twice, no faces split at tile borders, one resize instead of one per tile. The edit
keeps every weight and operator bit for bit: at 192x192 the edited graph gives the stock graph's outputs exactly
(tested). What is changed, reading the file with the flatbuffer layout of TensorFlow Lite's schema:

- the two final RESHAPE operators are dropped and their inputs become the graph's outputs, (1, H/4, W/4, k);
- the size constants of the RESIZE_BILINEAR operators become (H/16, W/16), (H/8, W/8), (H/4, W/4): each is twice its
  input grid, as it was at 192x192.

Anything else in the file (another model, another version of this one) raises :class:`GraphError` instead of
running a graph this module does not understand.
"""

from __future__ import annotations

import struct

__all__ = ["GraphError", "STRIDE", "any_size"]

STRIDE = 32  # the input's height and width must be multiples of this: five halvings, then four doublings
_RESHAPE, _RESIZE_BILINEAR = 22, 23  # TensorFlow Lite builtin operator codes
_SIDE = 192  # the stock input side, from which each upsampling step's scale is read


class GraphError(ValueError):
    """The TensorFlow Lite file is not the graph this module knows how to resize."""


def _u32(b: bytes | bytearray, at: int) -> int:
    return struct.unpack_from("<I", b, at)[0]


def _i32(b: bytes | bytearray, at: int) -> int:
    return struct.unpack_from("<i", b, at)[0]


def _field(b: bytes | bytearray, table: int, index: int) -> int | None:
    """Where field `index` of the flatbuffer table at `table` lies, or None when it is absent."""
    vtable = table - _i32(b, table)
    if 4 + 2 * index >= struct.unpack_from("<H", b, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", b, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector(b: bytes | bytearray, table: int, index: int) -> tuple[int, int]:
    """(where the elements start, how many) of the vector in field `index`."""
    at = _field(b, table, index)
    if at is None:
        raise GraphError("not a TensorFlow Lite graph of the expected layout")
    start = at + _u32(b, at)
    return start + 4, _u32(b, start)


def _table(b: bytes | bytearray, elements: int, k: int) -> int:
    at = elements + 4 * k
    return at + _u32(b, at)


def _scalar(b: bytes | bytearray, table: int, index: int, fmt: str = "<i") -> int:
    at = _field(b, table, index)
    return 0 if at is None else struct.unpack_from(fmt, b, at)[0]


def any_size(model: bytes, height: int, width: int) -> bytes:
    """The full-range BlazeFace file `model`, edited to take (1, height, width, 3) input; both multiples of
    :data:`STRIDE`. Its outputs are then (1, height/4, width/4, 16) regressors and (1, height/4, width/4, 1) scores,
    the anchors in row-major grid order."""
    if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
        raise GraphError(f"input {height}x{width}: both sides must be positive multiples of {STRIDE}")
    b = bytearray(model)
    try:
        root = _u32(b, 0)
        codes, _ = _vector(b, root, 1)
        subgraphs, _ = _vector(b, root, 2)
        buffers, _ = _vector(b, root, 4)
        graph = _table(b, subgraphs, 0)
        tensors, _ = _vector(b, graph, 0)
        outputs, n_outputs = _vector(b, graph, 2)
        operators, n_operators = _vector(b, graph, 3)

        def code(op: int) -> int:  # builtin_code (int32) or, in older files, deprecated_builtin_code (int8)
            opcode = _table(b, codes, _scalar(b, op, 0, "<I"))
            return max(_scalar(b, opcode, 3), _scalar(b, opcode, 0, "<b"))

        def tensor_io(op: int, index: int) -> list[int]:
            start, n = _vector(b, op, index)
            return [_i32(b, start + 4 * k) for k in range(n)]

        flattened = {}
        resized = 0
        for k in range(n_operators):
            op = _table(b, operators, k)
            kind = code(op)
            if kind == _RESHAPE:
                if k < n_operators - 2:
                    raise GraphError("a reshape inside the graph: not the full-range BlazeFace model")
                flattened[tensor_io(op, 2)[0]] = tensor_io(op, 1)[0]
            elif kind == _RESIZE_BILINEAR:
                size = _table(b, tensors, tensor_io(op, 1)[1])
                data, n = _vector(b, _table(b, buffers, _scalar(b, size, 2, "<I")), 0)
                old = struct.unpack_from("<2i", b, data)
                if n != 8 or old[0] != old[1] or _SIDE % old[0]:
                    raise GraphError(f"an upsampling step to {old}: not the full-range BlazeFace model")
                factor = _SIDE // old[0]
                struct.pack_into("<2i", b, data, height // factor, width // factor)
                resized += 1
        graph_outputs = [_i32(b, outputs + 4 * k) for k in range(n_outputs)]
        if resized != 3 or sorted(flattened) != sorted(graph_outputs):
            raise GraphError("not the full-range BlazeFace model (its outputs are not two final reshapes)")
        for k, tensor in enumerate(graph_outputs):
            struct.pack_into("<i", b, outputs + 4 * k, flattened[tensor])
        struct.pack_into("<I", b, operators - 4, n_operators - 2)
    except (struct.error, IndexError):
        raise GraphError("not a TensorFlow Lite file of the expected layout") from None
    return bytes(b)
