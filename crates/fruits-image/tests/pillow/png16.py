"""Prints how Pillow (10.4) converts 16-bit PNGs to RGB; tests/png16.rs holds the answers.

Run: python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow==10.4.0 numpy
     /tmp/pil/bin/python crates/fruits-image/tests/pillow/png16.py
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image

VALUES = [0, 1, 255, 256, 300, 1000, 32768, 65535]


def png(w, h, colour_type, raw):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    rows = b"\0" + raw
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


cases = {
    "grey": (0, b"".join(struct.pack(">H", v) for v in VALUES)),
    "grey_alpha": (4, b"".join(struct.pack(">HH", v, 1000) for v in VALUES)),
    "rgb": (2, b"".join(struct.pack(">HHH", v, v // 2, 65535 - v) for v in VALUES)),
    "rgba": (6, b"".join(struct.pack(">HHHH", v, v // 2, 65535 - v, 7) for v in VALUES)),
}
for name, (colour_type, raw) in cases.items():
    im = Image.open(io.BytesIO(png(len(VALUES), 1, colour_type, raw)))
    print(name, im.mode, np.asarray(im.convert("RGB"))[0].tolist())
