"""Errors the CLI turns into a one-line reason and a non-zero exit (never a traceback)."""

from __future__ import annotations


class SendtimeError(Exception):
    """Base of every expected failure: bad input, unreadable file, unwritable home, ..."""

    exit_code = 2


class IngestError(SendtimeError):
    """A whole file or source could not be ingested (unknown source, unreadable file, ...)."""


class TransformError(SendtimeError):
    """dbt failed."""


class StoreError(SendtimeError):
    """The online store could not be read or written."""
