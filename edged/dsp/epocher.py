"""Cut a stream into fixed-length epochs on its absolute sample index, filling and counting what is missing.

Epoch ``k`` is samples ``[k * N, (k + 1) * N)`` of the stream, so epoch numbers are stable however the
stream was chunked, interrupted or resent: they are what a published stage message is keyed on. Every
sample of every epoch is accounted for exactly once, as received data or as fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike


@dataclass(frozen=True, slots=True)
class Epoch:
    """One complete epoch. ``data`` is a fresh array of length N owned by the consumer; ``n_missing`` of
    its samples are fill, not data."""

    index: int
    data: np.ndarray
    n_missing: int


class Epocher:
    """Assemble epochs of ``samples_per_epoch`` samples from chunks and gaps given by absolute sample index.

    * :meth:`push` ``(start_index, data)``: samples ``start_index ...``. If ``start_index`` is ahead of the
      next expected index the skipped samples are an implicit gap (filled with ``fill_value`` and counted);
      if it is behind, the part already consumed is dropped and counted in ``counters["overlap"]`` (a
      resent packet must not overwrite, nor re-emit, what was already scored).
    * :meth:`push_gap` ``(start_index, n_missing)``: samples that will never arrive; filled and counted.

    Both return the epochs completed by the call, in order, each the moment its last sample (or fill)
    arrives; no epoch is ever emitted twice and a partial epoch is never emitted. The stream starts at
    index 0. Only the epoch being filled is held (one preallocated buffer), so memory is flat over a night.

    ``counters``: ``samples`` (data samples accepted), ``missing`` (fill samples, explicit and implicit),
    ``implicit_missing`` (the part of ``missing`` due to index jumps in :meth:`push`), ``overlap``
    (samples dropped as already consumed), ``epochs`` (epochs emitted).
    """

    def __init__(self, samples_per_epoch: int, *, fill_value: float = 0.0, dtype: DTypeLike = np.float32):
        if int(samples_per_epoch) != samples_per_epoch or samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be a positive integer, got {samples_per_epoch!r}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.fill_value = fill_value
        self._buf = np.empty(self.samples_per_epoch, dtype=dtype)
        self._next = 0  # absolute index of the next sample expected
        self._cur_missing = 0  # fill samples in the epoch being assembled
        self.counters: dict[str, int] = {
            "samples": 0,
            "missing": 0,
            "implicit_missing": 0,
            "overlap": 0,
            "epochs": 0,
        }

    @property
    def dtype(self) -> np.dtype:
        return self._buf.dtype

    @property
    def next_index(self) -> int:
        """Absolute index of the next sample the epocher expects."""
        return self._next

    @property
    def pending(self) -> int:
        """Samples (data or fill) already held for the epoch being assembled."""
        return self._next % self.samples_per_epoch

    def push(self, start_index: int, data: np.ndarray) -> list[Epoch]:
        """Add consecutive samples starting at absolute index ``start_index``."""
        data = np.asarray(data)
        if data.ndim != 1:
            raise ValueError(f"epocher takes 1-D chunks, got shape {data.shape}")
        start_index = self._check_index(start_index)
        out: list[Epoch] = []
        if start_index > self._next:
            n_jump = start_index - self._next
            self.counters["implicit_missing"] += n_jump
            self._write(None, n_jump, out)
        elif start_index < self._next:
            drop = min(self._next - start_index, len(data))
            self.counters["overlap"] += drop
            data = data[drop:]
        self._write(data, len(data), out)
        return out

    def push_gap(self, start_index: int, n_missing: int) -> list[Epoch]:
        """Declare ``n_missing`` samples from ``start_index`` lost: they are filled with ``fill_value``."""
        start_index = self._check_index(start_index)
        if int(n_missing) != n_missing or n_missing < 0:
            raise ValueError(f"n_missing must be a non-negative integer, got {n_missing!r}")
        n_missing = int(n_missing)
        out: list[Epoch] = []
        if start_index > self._next:  # a gap in front of the gap: still missing, and implicit
            n_jump = start_index - self._next
            self.counters["implicit_missing"] += n_jump
            self._write(None, n_jump, out)
        elif start_index < self._next:
            # Declared lost but already consumed (as data or fill): keep what we have.
            drop = min(self._next - start_index, n_missing)
            self.counters["overlap"] += drop
            n_missing -= drop
        self._write(None, n_missing, out)
        return out

    @staticmethod
    def _check_index(start_index: int) -> int:
        if int(start_index) != start_index or start_index < 0:
            raise ValueError(f"start_index must be a non-negative integer, got {start_index!r}")
        return int(start_index)

    def _write(self, data: np.ndarray | None, n: int, out: list[Epoch]) -> None:
        """Append ``n`` samples (``data``, or fill when None) at ``_next``, emitting completed epochs.
        Loops once per epoch touched, never per sample."""
        size = self.samples_per_epoch
        done = 0
        while done < n:
            pos = self._next % size
            take = min(size - pos, n - done)
            if data is None:
                self._buf[pos : pos + take] = self.fill_value
                self._cur_missing += take
                self.counters["missing"] += take
            else:
                self._buf[pos : pos + take] = data[done : done + take]
                self.counters["samples"] += take
            done += take
            self._next += take
            if pos + take == size:
                # A copy per epoch is the one allocation we keep: the consumer may hold on to it.
                out.append(Epoch(self._next // size - 1, self._buf.copy(), self._cur_missing))
                self._cur_missing = 0
                self.counters["epochs"] += 1
