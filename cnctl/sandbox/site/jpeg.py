"""A small baseline JPEG encoder (JFIF, YCbCr 4:4:4, the standard Huffman tables), standard library only.

For the sandbox's replay footage: real JPEG files whose bytes depend on nothing but the pixels and the quality,
so the footage archive is byte-for-byte the same on every machine and Python (no libjpeg version in the way).
Exact integer arithmetic throughout (colour conversion, DCT, quantisation); the DCT's cosine table is rounded
to integers once. Blocks of one flat colour (most of a frame of flat shapes) skip the DCT: only their DC term
is non-zero. Not fast (pure Python), and not meant to be: a 320x240 frame of flat shapes takes ~0.15 s.
"""

from __future__ import annotations

import math

# ITU T.81 Annex K: quantisation tables (natural order) and the typical Huffman tables.
_LUMA_Q = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA_Q = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)
_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
    60, 61, 54, 47, 55, 62, 63,
)
_DC_LUMA = ((0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0), tuple(range(12)))
_DC_CHROMA = ((0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0), tuple(range(12)))
_AC_LUMA = ((0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D), bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435"
    "363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798"
    "999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4"
    "f5f6f7f8f9fa"))
_AC_CHROMA = ((0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77), bytes.fromhex(
    "000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a"
    "35363738393a434445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a9293949596"
    "9798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4"
    "f5f6f7f8f9fa"))

_SHIFT = 13  # the cosine table's fixed-point scale (2**13)
# C[u][x] = round(2**13 * c(u) * cos((2x+1) u pi / 16)), c(0) = 1/sqrt(2), else 1: F = C f C^T / 4.
_COS = tuple(tuple(round((1 << _SHIFT) * (math.sqrt(0.5) if u == 0 else 1.0) * math.cos((2 * x + 1) * u * math.pi / 16))
                   for x in range(8)) for u in range(8))


def _scaled(table: tuple[int, ...], quality: int) -> tuple[int, ...]:
    """The IJG quality scaling of a base table (quality 1..100)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (q * scale + 50) // 100)) for q in table)


def _codes(spec: tuple[tuple[int, ...], bytes | tuple[int, ...]]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) from a table's counts per length and its symbols (T.81 Annex C)."""
    counts, symbols = spec
    codes, code, k = {}, 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


class _Bits:
    """MSB-first bit writer with JPEG's byte stuffing (0xFF -> 0xFF 0x00)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, code: int, length: int) -> None:
        self.acc = (self.acc << length) | (code & ((1 << length) - 1))
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with 1 bits
        return bytes(self.out)


def _category(value: int) -> tuple[int, int]:
    """(size, the value's bits) of a DC difference or AC coefficient."""
    size = abs(value).bit_length()
    return size, value if value >= 0 else value + (1 << size) - 1


def _dct_quantised(block: list[int], quant: tuple[int, ...]) -> list[int]:
    """The quantised DCT of 64 level-shifted samples (row-major), in zigzag order."""
    first = block[0]
    if all(v == first for v in block):
        coeffs = [0] * 64
        coeffs[0] = _div_round(first * 8, quant[0])
        return coeffs
    rows = [[sum(_COS[u][x] * block[y * 8 + x] for x in range(8)) for u in range(8)] for y in range(8)]
    out = [0] * 64
    for v in range(8):
        cv = _COS[v]
        for u in range(8):
            total = sum(cv[y] * rows[y][u] for y in range(8))  # scaled by 2**26; F = total / 4 / 2**26
            out[v * 8 + u] = _div_round(total, quant[v * 8 + u] << (2 * _SHIFT + 2))
    return [out[i] for i in _ZIGZAG]


def _div_round(num: int, den: int) -> int:
    """num / den rounded half away from zero, in integers."""
    q = (abs(num) * 2 + den) // (2 * den)
    return q if num >= 0 else -q


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def encode(width: int, height: int, rgb: bytes, quality: int = 85) -> bytes:
    """A baseline JFIF file of `rgb` (row-major, 3 bytes a pixel)."""
    if len(rgb) != width * height * 3 or not (0 < width < 65536 and 0 < height < 65536):
        raise ValueError("rgb must hold width * height * 3 bytes")
    qtabs = (_scaled(_LUMA_Q, quality), _scaled(_CHROMA_Q, quality))
    specs = (_DC_LUMA, _AC_LUMA, _DC_CHROMA, _AC_CHROMA)
    dc_codes = (_codes(_DC_LUMA), _codes(_DC_CHROMA))
    ac_codes = (_codes(_AC_LUMA), _codes(_AC_CHROMA))
    # Colour conversion (JFIF), in integers scaled by 2**16, level-shifted by 128; edges replicated.
    converted: dict[bytes, tuple[int, int, int]] = {}  # frames of flat shapes have few colours
    pixels = []
    for i in range(0, len(rgb), 3):
        key = rgb[i:i + 3]
        ycc = converted.get(key)
        if ycc is None:
            r, g, b = key
            ycc = converted[key] = (((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) - 128,
                                    (-11059 * r - 21709 * g + 32768 * b + 32768) >> 16,
                                    (32768 * r - 27439 * g - 5329 * b + 32768) >> 16)
        pixels.append(ycc)
    # Planes padded to whole blocks by repeating the last column and row (T.81 leaves padding to the encoder).
    padded_w, padded_h = -(-width // 8) * 8, -(-height // 8) * 8
    planes = []
    for c in range(3):
        rows = [[p[c] for p in pixels[y * width:(y + 1) * width]] for y in range(height)]
        rows = [row + [row[-1]] * (padded_w - width) for row in rows]
        rows += [rows[-1]] * (padded_h - height)
        planes.append(rows)
    bits, previous = _Bits(), [0, 0, 0]
    for by in range(0, padded_h, 8):
        for bx in range(0, padded_w, 8):
            for comp in range(3):
                plane, table = planes[comp], 0 if comp == 0 else 1
                block = [v for row in plane[by:by + 8] for v in row[bx:bx + 8]]
                coeffs = _dct_quantised(block, qtabs[table])
                size, value = _category(coeffs[0] - previous[comp])
                previous[comp] = coeffs[0]
                bits.put(*dc_codes[table][size])
                bits.put(value, size)
                run = 0
                for coeff in coeffs[1:]:
                    if coeff == 0:
                        run += 1
                        continue
                    while run > 15:
                        bits.put(*ac_codes[table][0xF0])
                        run -= 16
                    size, value = _category(coeff)
                    bits.put(*ac_codes[table][(run << 4) | size])
                    bits.put(value, size)
                    run = 0
                if run:
                    bits.put(*ac_codes[table][0x00])
    head = bytearray(b"\xff\xd8")
    head += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    for n, q in enumerate(qtabs):
        head += _segment(0xDB, bytes((n,)) + bytes(q[i] for i in _ZIGZAG))
    head += _segment(0xC0, bytes((8,)) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes(
        (3, 1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1)))
    for cls_id, (counts, symbols) in zip((0x00, 0x10, 0x01, 0x11), specs, strict=True):
        head += _segment(0xC4, bytes((cls_id, *counts)) + bytes(symbols))
    head += _segment(0xDA, bytes((3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0)))
    return bytes(head) + bits.flush() + b"\xff\xd9"
