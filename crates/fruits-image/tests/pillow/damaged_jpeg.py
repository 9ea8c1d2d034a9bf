"""Pillow's verdict on each file of a folder: tests/damaged_jpeg.rs compares fruits with it.

For every `*.jpg` (sorted): CRC-32 of the pixels of
`Image.open(path).convert("RGB").resize((224, 224))`, or null where Pillow refuses the file.

    FRUITS_WRITE_CORPUS=/tmp/corpus cargo test -p fruits-image --test damaged_jpeg
    /tmp/pil/bin/python crates/fruits-image/tests/pillow/damaged_jpeg.py /tmp/corpus \
        > crates/fruits-image/tests/pillow/damaged-jpeg.json

(Pillow 10.4.0: `pip install pillow==10.4.0`.)
"""
import json
import pathlib
import sys
import zlib

from PIL import Image


out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.jpg")):
    try:
        with Image.open(path) as im:
            out[path.name] = f'{zlib.crc32(im.convert("RGB").resize((224, 224)).tobytes()):08x}'
    except Exception:
        out[path.name] = None
json.dump(out, sys.stdout, indent=0, sort_keys=True)
print()
