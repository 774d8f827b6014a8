#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors: small valid files built by hand."""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")


def write(name, header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def tensors(entries):
    """entries: (name, dtype, shape, raw bytes) in data order."""
    header, data = {}, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


os.makedirs(HERE, exist_ok=True)
write("empty.safetensors", {})
write("metadata_only.safetensors", {"__metadata__": {"format": "pt", "d_model": "64"}}, pad=False)

h, d = tensors([("layers.0.mixer.in_proj.weight", "F32", [2, 2], struct.pack("<4f", 1.0, -2.5, 0.0, 3.25))])
h["__metadata__"] = {"n_layers": "1"}
write("one_f32.safetensors", h, d)

h, d = tensors([
    ("layers.0.mixer.A_log", "F64", [2], struct.pack("<2d", -0.5, 1e-300)),
    ("layers.0.mixer.D", "F32", [3], struct.pack("<3f", 1.0, 1.0, 1.0)),
    ("layers.0.norm.weight", "F16", [2], struct.pack("<2H", 0x3C00, 0x0001)),
    ("layers.0.mixer.dt_bias", "BF16", [2, 1], struct.pack("<2H", 0xBFC0, 0x7F80)),
    ("step", "I64", [], struct.pack("<q", 7)),
    ("empty", "F32", [0, 3], b""),
    ("mask", "BOOL", [3], b"\x01\x00\x01"),
])
h["__metadata__"] = {"model": "mamba2", "expand": "2"}
write("mixed.safetensors", h, d)

# Offsets out of name order and no padding.
h = {"b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
     "a": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}
write("unordered.safetensors", h, struct.pack("<f", 0.5) + b"\x07\x08", pad=False)
