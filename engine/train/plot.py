"""A loss-curve PNG without a plotting library: a small raster, drawn point by point, saved with zlib.

Good enough to see a run's shape at a glance (axes, the raw curve, a smoothed curve, min/max labels in
the file name's companion JSON are not needed: the progress log has the numbers).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

W, H, MARGIN = 640, 360, 30
# 3x5 digit glyphs for axis labels (rows of 3 bits).
GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "k": "100101110101101",
}


def _png(pixels: list[bytearray]) -> bytes:
    raw = b"".join(b"\0" + bytes(row) for row in pixels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _text(px: list[bytearray], x: int, y: int, s: str, color: tuple[int, int, int]) -> None:
    for ch in s:
        g = GLYPHS.get(ch)
        if g:
            for i, bit in enumerate(g):
                if bit == "1":
                    _set(px, x + i % 3, y + i // 3, color)
        x += 4


def _set(px: list[bytearray], x: int, y: int, color: tuple[int, int, int]) -> None:
    if 0 <= x < W and 0 <= y < H:
        px[y][3 * x : 3 * x + 3] = bytes(color)


def _line(px: list[bytearray], x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
    n = max(abs(x1 - x0), abs(y1 - y0), 1)
    for i in range(n + 1):
        _set(px, round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n), color)


def plot_curve(xs: list[float], ys: list[float], out: str | Path) -> Path:
    """Line plot of ys against xs (raw in light blue, an exponential moving average in dark blue)."""
    px = [bytearray(b"\xff" * (3 * W)) for _ in range(H)]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    lo, hi = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (MARGIN + round((x - x0) / (x1 - x0) * (W - 2 * MARGIN)),
                H - MARGIN - round((y - lo) / (hi - lo) * (H - 2 * MARGIN)))

    grey = (150, 150, 150)
    _line(px, MARGIN, H - MARGIN, W - MARGIN, H - MARGIN, grey)
    _line(px, MARGIN, MARGIN, MARGIN, H - MARGIN, grey)
    _text(px, 2, MARGIN - 2, f"{hi:.2f}", (0, 0, 0))
    _text(px, 2, H - MARGIN - 2, f"{lo:.2f}", (0, 0, 0))
    _text(px, MARGIN, H - MARGIN + 8, f"{x0:.0f}", (0, 0, 0))
    _text(px, W - MARGIN - 24, H - MARGIN + 8, f"{x1:.0f}", (0, 0, 0))
    ema = ys[0]
    prev_raw: tuple[int, int] | None = None
    prev_ema: tuple[int, int] | None = None
    for x, y in zip(xs, ys, strict=True):
        ema = 0.9 * ema + 0.1 * y
        p, q = to_px(x, y), to_px(x, ema)
        if prev_raw is not None and prev_ema is not None:
            _line(px, *prev_raw, *p, (170, 200, 240))
            _line(px, *prev_ema, *q, (20, 60, 160))
        prev_raw, prev_ema = p, q
    out = Path(out)
    out.write_bytes(_png(px))
    return out


def save_loss_curve(metrics_jsonl: str | Path, out: str | Path) -> Path | None:
    """Loss against step from a trainer's metrics.jsonl; None when there is nothing to plot yet."""
    recs = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "loss" in r]
    if len(recs) < 2:
        return None
    return plot_curve([r["step"] for r in recs], [r["loss"] for r in recs], out)
