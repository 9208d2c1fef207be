"""Reads that stream: rows of many disjoint ranges, or a whole array, a few chunks at a time.

A whole-store pass (statistics, counts) or a read of some episodes' rows (IDM training)
must hold a few chunks, not the array. Each chunk is decoded at most once: the ranges
that fall into one block of chunks are served by one read of that block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

Reader = Callable[[int, int], np.ndarray]  # rows [start, stop) of one array, checked


def iter_blocks(read: Reader, size: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows [start, start + block_rows)) over rows [0, size), block by block."""
    for start in range(0, size, block_rows):
        yield start, read(start, min(start + block_rows, size))


def gather_ranges(
    read: Reader,
    starts: np.ndarray,
    stops: np.ndarray,
    out: np.ndarray,
    block_rows: int,
    chunk_rows: int,
) -> np.ndarray:
    """Fill `out` with the rows of the ranges [starts[i], stops[i]), concatenated in order.

    The ranges are sorted and disjoint. They are cut at multiples of `block_rows` (a
    multiple of `chunk_rows`), and the pieces of one block that touch the same or adjacent
    chunks are served by one read: no read is longer than a block, no chunk is decoded
    twice, and none that no range touches. Rows are cast to `out`'s dtype as they are
    copied (uint8 to float32, say).
    """
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    if starts.shape != stops.shape or (stops < starts).any():
        raise ValueError(f"Expected ranges with stops >= starts. Got {starts} and {stops}.")
    if starts.size > 1 and (starts[1:] < stops[:-1]).any():
        raise ValueError("Expected sorted, disjoint ranges. Got overlapping or unsorted ones.")
    total = int((stops - starts).sum())
    if out.shape[0] != total:
        raise ValueError(f"Expected `out` of {total} rows for the ranges. Got {out.shape[0]}.")
    position = 0
    for read_lo, pieces in _reads(starts, stops, block_rows, chunk_rows):
        rows = read(read_lo, pieces[-1][1])
        for lo, hi in pieces:
            out[position : position + hi - lo] = rows[lo - read_lo : hi - read_lo]
            position += hi - lo
    return out


def _reads(
    starts: np.ndarray, stops: np.ndarray, block_rows: int, chunk_rows: int
) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(first row, pieces) of each read: the ranges cut at block boundaries, grouped."""
    pieces: list[tuple[int, int]] = []
    for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):
        while lo < hi:
            cut = min(hi, (lo // block_rows + 1) * block_rows)
            if pieces and (
                lo // block_rows != pieces[0][0] // block_rows
                or lo // chunk_rows > (pieces[-1][1] - 1) // chunk_rows + 1
            ):
                yield pieces[0][0], pieces
                pieces = []
            pieces.append((lo, cut))
            lo = cut
    if pieces:
        yield pieces[0][0], pieces
