#!/usr/bin/env python3
"""Draws the app and tray icons (RGBA PNGs, standard library only): a rounded square with a
tunnel arch. Tray variants differ in colour: grey (nothing up), green (tunnels up), red (a
tunnel failing). The macOS menu bar takes template images instead (black + alpha: the system
tints them for light and dark menu bars), so there the three differ in shape: the bare arch
(nothing up), the square with the arch cut out (tunnels up), and that with a badge cut into its
corner (a tunnel failing). Run from anywhere: writes next to this file."""
import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def png_bytes(size, pixel):
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

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def png(path, size, pixel):
    with open(path, "wb") as f:
        f.write(png_bytes(size, pixel))


def ico(path, sizes, pixel):
    """A Windows icon file holding one PNG per size (the Windows resource of the binaries)."""
    images = [png_bytes(size, pixel) for size in sizes]
    offset = 6 + 16 * len(images)
    header = struct.pack("<HHH", 0, 1, len(images))
    entries = b""
    for size, data in zip(sizes, images):
        # A width or height of 256 is written as 0.
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
    with open(path, "wb") as f:
        f.write(header + entries + b"".join(images))


def coverage(d):
    """Anti-aliasing: 1 inside (d < -0.5), 0 outside (d > 0.5)."""
    return max(0.0, min(1.0, 0.5 - d))


def square(u, v):
    """Signed distance (in icon widths) to the rounded square."""
    r = 0.2
    qx, qy = abs(u - 0.5) - (0.5 - r) + 0.02, abs(v - 0.5) - (0.5 - r) + 0.02
    return math.hypot(max(qx, 0), max(qy, 0)) + min(max(qx, qy), 0) - r


def arch(u, v):
    """Signed distance to the tunnel arch: a thick half ring on a base line."""
    cx, cy = 0.5, 0.62
    dist = math.hypot(u - cx, v - cy)
    ring = abs(dist - 0.24) - 0.07
    if v > cy:
        ring = max(abs(u - cx) - 0.31, abs(v - cy - 0.06) - 0.06)
        ring = min(ring, max(abs(abs(u - cx) - 0.24) - 0.07, v - cy - 0.12))
    return ring


def icon(fill, mark=(255, 255, 255)):
    def pixel(x, y, size):
        s = size
        u, v = x / s, y / s
        a_bg = coverage(square(u, v) * s)
        a_mark = coverage(arch(u, v) * s) * a_bg
        cr = [fill[i] * (1 - a_mark) + mark[i] * a_mark for i in range(3)]
        return bytes([int(cr[0]), int(cr[1]), int(cr[2]), int(255 * a_bg)])

    return pixel


APP = (37, 99, 235)
TRAY = {
    "tray-idle.png": (107, 114, 128),
    "tray-up.png": (22, 163, 74),
    "tray-failing.png": (220, 38, 38),
}

def template(look):
    """A macOS template image: black, the shape in the alpha channel."""

    def pixel(x, y, size):
        s = size
        u, v = x / s, y / s
        a_arch = coverage(arch(u, v) * s)
        if look == "idle":
            alpha = a_arch
        else:
            alpha = coverage(square(u, v) * s) * (1 - a_arch)
            if look == "failing":
                # A dot in a transparent ring at the top right corner.
                d = math.hypot(u - 0.8, v - 0.2)
                alpha *= 1 - coverage((d - 0.22) * s)
                alpha = max(alpha, coverage((d - 0.13) * s))
        return bytes([0, 0, 0, int(round(255 * alpha))])

    return pixel


def icns(path, entries, pixel):
    """A macOS icon file: one PNG per (OSType, size) entry, as the .app bundle's icon."""
    body = b"".join(
        kind + struct.pack(">I", 8 + len(data)) + data
        for kind, data in ((kind, png_bytes(size, pixel)) for kind, size in entries)
    )
    with open(path, "wb") as f:
        f.write(b"icns" + struct.pack(">I", 8 + len(body)) + body)


# The app icon in each size a system asks for: the Linux package's hicolor PNGs (named as the
# Tauri bundler installs them, `128x128@2x` being the 256 px one), the Windows .ico, the macOS
# .icns (16 to 512 pt at 1x and 2x).
for size, name in [
    (32, "32x32.png"),
    (64, "64x64.png"),
    (128, "128x128.png"),
    (256, "128x128@2x.png"),
    (256, "icon.png"),
    (512, "512x512.png"),
]:
    png(os.path.join(HERE, name), size, icon(APP))
ico(os.path.join(HERE, "icon.ico"), [16, 24, 32, 48, 64, 256], icon(APP))
icns(
    os.path.join(HERE, "icon.icns"),
    [(b"icp4", 16), (b"icp5", 32), (b"ic11", 32), (b"icp6", 64), (b"ic12", 64), (b"ic07", 128),
     (b"ic08", 256), (b"ic13", 256), (b"ic09", 512), (b"ic14", 512), (b"ic10", 1024)],
    icon(APP),
)
for name, colour in TRAY.items():
    png(os.path.join(HERE, name), 64, icon(colour))
# 18 pt, the menu bar's icon height, at 2x.
for look in ["idle", "up", "failing"]:
    png(os.path.join(HERE, f"tray-template-{look}.png"), 36, template(look))
