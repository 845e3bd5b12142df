#!/usr/bin/env python3
"""Draws the app and tray icons (RGBA PNGs, standard library only): a rounded square with a
tunnel arch. Tray variants differ in colour: grey (nothing up), green (tunnels up), red (a
tunnel failing). Also icon.ico, the app icon a Windows build embeds, with the app PNGs as its
images (PNG entries, which Windows reads since Vista). Run from anywhere: writes next to this
file."""
import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png(path, size, pixel):
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row.extend(pixel(x + 0.5, y + 0.5, size))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)))
        f.write(chunk(b"IDAT", raw))
        f.write(chunk(b"IEND", b""))


def coverage(d):
    """Anti-aliasing: 1 inside (d < -0.5), 0 outside (d > 0.5)."""
    return max(0.0, min(1.0, 0.5 - d))


def icon(fill, mark=(255, 255, 255)):
    def pixel(x, y, size):
        s = size
        u, v = x / s, y / s
        # Rounded square.
        r = 0.2
        qx, qy = abs(u - 0.5) - (0.5 - r) + 0.02, abs(v - 0.5) - (0.5 - r) + 0.02
        outside = math.hypot(max(qx, 0), max(qy, 0)) + min(max(qx, qy), 0) - r
        a_bg = coverage(outside * s)
        # Tunnel arch: a thick half ring on a base line.
        cx, cy = 0.5, 0.62
        dist = math.hypot(u - cx, v - cy)
        ring = abs(dist - 0.24) - 0.07
        if v > cy:
            ring = max(abs(u - cx) - 0.31, abs(v - cy - 0.06) - 0.06)
            ring = min(ring, max(abs(abs(u - cx) - 0.24) - 0.07, v - cy - 0.12))
        a_mark = coverage(ring * s) * a_bg
        cr = [fill[i] * (1 - a_mark) + mark[i] * a_mark for i in range(3)]
        return bytes([int(cr[0]), int(cr[1]), int(cr[2]), int(255 * a_bg)])

    return pixel


APP = (37, 99, 235)
TRAY = {
    "tray-idle.png": (107, 114, 128),
    "tray-up.png": (22, 163, 74),
    "tray-failing.png": (220, 38, 38),
}

for size, name in [(32, "32x32.png"), (128, "128x128.png"), (256, "icon.png")]:
    png(os.path.join(HERE, name), size, icon(APP))
def ico(path, images):
    """An ICO file whose entries are the given PNG files (each square, at most 256 pixels)."""
    blobs = []
    for name in images:
        with open(os.path.join(HERE, name), "rb") as f:
            blobs.append(f.read())
    offset = 6 + 16 * len(blobs)
    entries = b""
    for blob in blobs:
        size = struct.unpack(">I", blob[16:20])[0]
        # Width and height 0 stand for 256; 32 bits per pixel.
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(blob), offset)
        offset += len(blob)
    with open(path, "wb") as f:
        f.write(struct.pack("<HHH", 0, 1, len(blobs)) + entries + b"".join(blobs))


ico(os.path.join(HERE, "icon.ico"), ["32x32.png", "128x128.png", "icon.png"])
for name, colour in TRAY.items():
    png(os.path.join(HERE, name), 64, icon(colour))
