"""File readers behind the ``replay`` source: one call, :func:`read_recording`, picks the reader by suffix.

Every reader returns a :class:`~edged.sources.recording.Recording` and reports every failure as a
:class:`~edged.errors.RecordingError` whose one-line message starts with the file's path.

==========  ===============================================  ===========================================
suffix      format                                           reader
==========  ===============================================  ===========================================
``.edf``    EDF, EDF+C, EDF+D (annotations, stages, gaps)    :func:`edf.read_edf`
``.hea``    WFDB record (formats 212, 16, 61, 80, 160, 24,   :func:`wfdb.read_wfdb`
``.dat``    32); either file names the record
``.csv``    CSV with a header row; MMASH ``RR.csv``          :func:`tabular.read_csv`
``.npz``    NumPy archive of 1-D channels + ``fs``           :func:`tabular.read_npz`
``.rr``     PhysioNet ``rrlist`` beat intervals (+ ``.an``)  :func:`physionet_rr.read_physionet_rr`
==========  ===============================================  ===========================================

Text files are recognised by their whole name: ``<id>_heartrate.txt`` is Walch 2019 Apple Watch heart rate
(+ ``../labels/<id>_labeled_sleep.txt``), read by :func:`walch.read_walch_heart_rate`.
"""

from __future__ import annotations

import os
from pathlib import Path

from edged.errors import RecordingError
from edged.sources.readers.edf import Annotation, load_edf, read_edf, write_edf
from edged.sources.readers.physionet_rr import read_physionet_rr
from edged.sources.readers.tabular import read_csv, read_mmash_rr, read_npz
from edged.sources.readers.walch import SUFFIX as WALCH_SUFFIX
from edged.sources.readers.walch import read_walch_heart_rate
from edged.sources.readers.wfdb import read_wfdb
from edged.sources.recording import Recording

SUPPORTED_SUFFIXES: tuple[str, ...] = (".edf", ".hea", ".dat", ".csv", ".npz", ".rr")
# Text files are recognised by their whole name: ".txt" alone says nothing about the format.
SUPPORTED_NAMES: tuple[str, ...] = (WALCH_SUFFIX,)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Annotation",
    "load_edf",
    "read_csv",
    "read_edf",
    "read_mmash_rr",
    "read_npz",
    "read_physionet_rr",
    "read_recording",
    "read_walch_heart_rate",
    "read_wfdb",
    "write_edf",
]


def read_recording(path: str | os.PathLike[str], *, fs: float | None = None) -> Recording:
    """Read any supported recording file.

    ``fs`` (Hz) is for files that do not state their rate (a CSV without a time column, an NPZ without an
    ``fs`` key); for those that do, it must agree with the file. EDF, WFDB and ``.rr`` files always state
    their timing, and ``fs`` is not used for them.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    named = next((n for n in SUPPORTED_NAMES if path.name.lower().endswith(n)), None)
    if suffix not in SUPPORTED_SUFFIXES and named is None:
        raise RecordingError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}, files named <id>{', <id>'.join(SUPPORTED_NAMES)}"
        )
    if not path.exists():
        raise RecordingError(f"{path}: recording not found")
    if path.is_dir():
        raise RecordingError(f"{path}: is a directory, not a recording file")
    try:
        if suffix == ".edf":
            return read_edf(path)
        if suffix in (".hea", ".dat"):
            return read_wfdb(path)
        if suffix == ".csv":
            return read_csv(path, fs=fs)
        if suffix == ".npz":
            return read_npz(path, fs=fs)
        if named == WALCH_SUFFIX:
            return read_walch_heart_rate(path)
        return read_physionet_rr(path)
    except RecordingError:
        raise
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        # Anything a reader did not anticipate still surfaces as one line naming the file.
        raise RecordingError(f"{path}: unreadable: {type(exc).__name__}: {exc}") from exc
