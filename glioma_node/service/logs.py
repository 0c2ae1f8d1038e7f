"""Structured JSON logs, one object per line, with no patient names or IDs in them.

Patient identifiers are replaced by :func:`pseudonym` (a salted SHA-256 prefix), so a
log line can be matched to a study by someone who has the data, and by no one else.
Every line of the log is one JSON object, tracebacks included: a record's traceback is
its ``error`` field, and :func:`configure` routes what Python would print to stderr on
its own (an uncaught exception, in any thread, or one it had to ignore) through the
same formatter, so a log shipper never meets a line it cannot parse.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from types import TracebackType

_SALT = b"glioma-node-log-pseudonym-v1"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def pseudonym(value: str | None) -> str | None:
    """A stable 12-character stand-in for a patient identifier (None stays None)."""
    if not value:
        return None
    return hashlib.sha256(_SALT + str(value).encode("utf-8", "replace")).hexdigest()[:12]


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line: time, level, logger, message and the record's extra fields."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int | None = None, stream=None) -> None:
    """JSON logs to ``stream`` (stderr) for the whole process; quiets the libraries' chatter.

    ``level`` defaults to ``GLIOMA_NODE_LOG_LEVEL`` (DEBUG, INFO, WARNING, ...) or INFO;
    child processes inherit the variable, so one setting covers the node and its worker."""
    if level is None:
        level = getattr(logging, os.environ.get("GLIOMA_NODE_LOG_LEVEL", "INFO").upper(), logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (pydicom's about a received value, a library's deprecation) become
    # JSON records of the "py.warnings" logger instead of bare lines on stderr
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable
    for chatty in ("pynetdicom", "highdicom", "PIL", "matplotlib"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


_crash = logging.getLogger("glioma_node.uncaught")


def _uncaught(kind: type[BaseException], value: BaseException, trace: TracebackType | None) -> None:
    """``sys.excepthook``: the exception that ends the program, as one JSON record."""
    _crash.critical("uncaught exception: %s: %s", kind.__name__, value, exc_info=(kind, value, trace))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread's uncaught exception, as one JSON record
    (SystemExit ends a thread quietly, as Python's own hook lets it)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else None
    _crash.error("uncaught exception in thread %s: %s: %s", name, args.exc_type.__name__, args.exc_value,
                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook``: an exception Python had to ignore (in ``__del__``, a
    callback of the garbage collector), as one JSON record."""
    trace = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    _crash.warning("%s: %s", unraisable.err_msg or "exception ignored", unraisable.exc_value,
                   exc_info=trace if unraisable.exc_value is not None else None,  # type: ignore[arg-type]
                   extra={"object": repr(unraisable.object)})
