"""Perplexity-by-context-length plot as a PNG: matplotlib when it is installed, otherwise a small
raster drawn here (axes, one coloured polyline per model, digit labels, a legend of coloured
swatches numbered in the order of the printed table) so the plot never needs a dependency."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 420, 60, 20, 40, 40
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]
# 3x5 glyphs, rows of 3 bits, for numbers on the axes.
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "K": "101101110101101",
}

Series = tuple[str, Sequence[float], Sequence[float]]  # (name, xs, ys)


def plot_lines(series: Sequence[Series], out: str | Path, title: str = "", xlabel: str = "",
               ylabel: str = "", log2_x: bool = True) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _raster(series, out, log2_x)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, xs, ys in series:
        ax.plot(xs, ys, marker="o", label=name)
    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _label(v: float) -> str:
    if v >= 1024 and v == int(v) and int(v) % 1024 == 0:
        return f"{int(v) // 1024}K"
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def _raster(series: Sequence[Series], out: Path, log2_x: bool) -> Path:
    px = [bytearray(b"\xff" * (3 * W)) for _ in range(H)]

    def put(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < W and 0 <= y < H:
            px[y][3 * x : 3 * x + 3] = bytes(c)

    def line(x0: int, y0: int, x1: int, y1: int, c: tuple[int, int, int], width: int = 1) -> None:
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(n + 1):
            x, y = round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n)
            for dx in range(width):
                for dy in range(width):
                    put(x + dx, y + dy, c)

    def text(x: int, y: int, s: str, scale: int = 2) -> None:
        for ch in s:
            for i, bit in enumerate(FONT.get(ch, "0" * 15)):
                if bit == "1":
                    for dx in range(scale):
                        for dy in range(scale):
                            put(x + (i % 3) * scale + dx, y + (i // 3) * scale + dy, (0, 0, 0))
            x += 4 * scale

    fx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xs_all = [fx(x) for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys if math.isfinite(y)]
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = min(ys_all), max(ys_all)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def to_py(y: float) -> int:
        return H - BOTTOM - round((y - y0) / (y1 - y0) * (H - TOP - BOTTOM))

    def to_px(x: float, y: float) -> tuple[int, int]:
        return LEFT + round((fx(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT)), to_py(y)

    grey = (160, 160, 160)
    line(LEFT, H - BOTTOM, W - RIGHT, H - BOTTOM, grey)
    line(LEFT, TOP, LEFT, H - BOTTOM, grey)
    for x in sorted({x for _, xs, _ in series for x in xs}):
        px_x, _ = to_px(x, y0)
        line(px_x, H - BOTTOM, px_x, H - BOTTOM + 4, grey)
        text(px_x - 8, H - BOTTOM + 10, _label(x))
    for frac in (0.0, 0.5, 1.0):
        v = y0 + pad + frac * (y1 - y0 - 2 * pad)
        px_y = to_py(v)
        line(LEFT - 4, px_y, LEFT, px_y, grey)
        text(4, px_y - 5, _label(v))
    for k, (_, xs, ys) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        pts = [to_px(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        for a, b in zip(pts, pts[1:], strict=False):
            line(*a, *b, color, width=2)
        for x, y in pts:
            for dx in range(-3, 4):
                for dy in range(-3, 4):
                    put(x + dx, y + dy, color)
        # Legend: a swatch and the series' number (its row in the printed table).
        lx, ly = W - RIGHT - 60, TOP + 16 * k
        for dx in range(14):
            for dy in range(8):
                put(lx + dx, ly + dy, color)
        text(lx + 20, ly - 1, str(k + 1))
    raw = b"".join(b"\0" + bytes(row) for row in px)
    out.write_bytes(_png(raw))
    return out


def _png(raw: bytes) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
