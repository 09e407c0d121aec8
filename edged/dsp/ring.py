"""A fixed-capacity ring buffer of samples: the per-channel memory between a reader and the scorer.

Memory is allocated once, so a night of appends never grows the heap; an append costs O(len(x)) whatever
the capacity (at most two slice assignments), because the Pi cannot afford to shift a multi-minute context
window on every 1-s chunk.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


class RingBuffer:
    """The newest ``capacity`` samples of a 1-D stream.

    ``len(rb)`` is how many valid samples it holds (at most ``capacity``); ``total`` is how many samples were
    ever appended, which with ``len`` locates the window on the stream's sample index: the newest sample is
    number ``total - 1``.
    """

    def __init__(self, capacity: int, dtype: DTypeLike = np.float32):
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"ring buffer capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=dtype)
        self._head = 0  # where the next sample goes; the oldest valid sample once the buffer is full
        self._len = 0
        self._total = 0

    @property
    def dtype(self) -> np.dtype:
        return self._buf.dtype

    @property
    def total(self) -> int:
        """Samples ever appended (not counting :meth:`fill`, not reset by :meth:`clear`)."""
        return self._total

    def __len__(self) -> int:
        return self._len

    def append(self, x: np.ndarray) -> None:
        """Append consecutive samples; the oldest fall out once ``capacity`` is reached."""
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"ring buffer takes 1-D chunks, got shape {x.shape}")
        n = len(x)
        if n == 0:
            return
        self._total += n
        cap = self.capacity
        if n >= cap:
            # Only the tail can survive: write it in order and restart at slot 0 (one assignment of
            # capacity <= n samples, so still O(len(x))).
            self._buf[:] = x[n - cap :]
            self._head = 0
            self._len = cap
            return
        first = min(n, cap - self._head)  # up to the physical end of the array ...
        self._buf[self._head : self._head + first] = x[:first]
        if first < n:  # ... and the rest wraps to the front
            self._buf[: n - first] = x[first:]
        self._head = (self._head + n) % cap
        self._len = min(cap, self._len + n)

    def latest(self, n: int) -> np.ndarray:
        """A copy of the newest ``n`` samples, oldest first. Raises if fewer than ``n`` are held: a window
        padded with zeros the caller did not ask for would be indistinguishable from real data."""
        if int(n) != n or n < 0:
            raise ValueError(f"latest() needs a non-negative integer count, got {n!r}")
        n = int(n)
        if n > self._len:
            raise ValueError(f"asked for the latest {n} samples but the ring buffer holds {self._len}")
        out = np.empty(n, dtype=self._buf.dtype)
        start = (self._head - n) % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start : start + first]
        out[first:] = self._buf[: n - first]
        return out

    def fill(self, value: float) -> None:
        """Preload the whole buffer with ``value`` and mark it full, e.g. so that a model's context window
        starts as explicitly 'missing' rather than being refused until enough real data has arrived.
        ``total`` is unchanged: it counts real samples only."""
        self._buf[:] = value
        self._head = 0
        self._len = self.capacity

    def clear(self) -> None:
        """Forget the held samples (``total`` keeps counting the stream)."""
        self._head = 0
        self._len = 0
