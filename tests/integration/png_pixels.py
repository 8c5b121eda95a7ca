#!/usr/bin/env python3
"""What a PNG shows, with the standard library alone: png_pixels.py FILE [#rrggbb ...]

Prints "WIDTH HEIGHT DISTINCT_COLOURS NON_BACKGROUND_FRACTION" and then, for each colour asked
for, "#rrggbb COUNT" (pixels of exactly that colour). The background is the most common
colour. Decodes 8-bit, non-interlaced greyscale/RGB/RGBA PNGs (what gnuplot's pngcairo writes);
anything else is an error."""
import struct
import sys
import zlib
from collections import Counter


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            sys.exit(f"{path}: chunk {kind!r} fails its CRC")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace:
        sys.exit(f"{path}: depth {depth}, colour type {ctype}, interlace {interlace}: unsupported")
    raw, stride = zlib.decompress(idat), w * channels
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, channels, rows


def main():
    w, h, ch, rows = decode(sys.argv[1])
    counts = Counter()
    for row in rows:
        for x in range(w):
            px = row[x * ch:x * ch + ch]
            rgb = px[:3] if ch >= 3 else px[:1] * 3
            counts[bytes(rgb)] += 1
    background = counts.most_common(1)[0][1]
    print(w, h, len(counts), f"{1 - background / (w * h):.4f}")
    for want in sys.argv[2:]:
        print(want, counts[bytes.fromhex(want.lstrip("#"))])


main()
