"""Errors for DICOM input. Each says what is wrong and, where it can, what to do about it."""
from __future__ import annotations


class DicomInputError(Exception):
    """Base class: a file or series that glioma-node cannot use."""


class NotDicomError(DicomInputError):
    """The file is not a DICOM Part 10 file (no 'DICM' preamble) or not a dataset at all."""


class UnreadableDicomError(DicomInputError):
    """The file claims to be DICOM but cannot be parsed (truncated, corrupt, missing key tags)."""


class SeriesRefused(DicomInputError):
    """A series that is valid DICOM but cannot become one 3D volume.

    ``code`` is a short stable token for programs (``time_series``, ``gap``, ...);
    the message is for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def reason(self) -> str:
        return str(self)
