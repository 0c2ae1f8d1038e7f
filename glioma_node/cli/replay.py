"""`glioma-node replay DIR --to AET@HOST:PORT`: send a folder the way a scanner does.

One association per series by default (``per_series=False``: one for everything),
each instance in its own transfer syntax, with a progress bar. For offline replay tests
with sample DICOM and for ``make demo``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE
from tqdm import tqdm

from glioma_node.dicom_io.scan import scan

_TARGET = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


@dataclass
class ReplayResult:
    """What a replay sent: instances, associations, refusals and seconds."""

    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    associations: int = 0


def parse_target(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` → (AE title, host, port); ValueError with the expected form."""
    match = _TARGET.match(text.strip())
    if not match:
        raise ValueError(f"expected AET@HOST:PORT (e.g. GLIOMA_NODE@127.0.0.1:11112), got {text!r}")
    return match["ae"], match["host"], int(match["port"])


def _send(paths: list[Path], ae_title: str, host: str, port: int, calling_ae: str, result: ReplayResult,
          bar: tqdm) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
    contexts = {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}
    for sop_class, syntax in sorted(contexts)[:128]:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=ae_title)
    result.associations += 1
    if not assoc.is_established:
        result.failed += [(str(p), "association rejected or failed") for p in paths]
        bar.update(len(paths))
        return
    try:
        for index, path in enumerate(paths):
            if not assoc.is_established:  # the peer aborted or released: the rest was not sent
                result.failed += [(str(p), "association ended by the peer") for p in paths[index:]]
                bar.update(len(paths) - index)
                return
            try:
                status = assoc.send_c_store(pydicom.dcmread(path))
            except ValueError as exc:  # no accepted presentation context for this instance
                result.failed.append((str(path), str(exc)))
                bar.update(1)
                continue
            except RuntimeError as exc:  # the association ended while the request was sent
                result.failed.append((str(path), f"association ended: {exc}"))
                bar.update(1)
                continue
            code = getattr(status, "Status", None)
            if code == 0x0000 or (code is not None and 0xB000 <= code <= 0xBFFF):
                result.sent += 1
            else:
                result.failed.append((str(path), "no response" if code is None else hex(code)))
            bar.update(1)
    finally:
        if assoc.is_established:
            assoc.release()


def replay(folder: Path, target: str, calling_ae: str = "GLIOMA_REPLAY", per_series: bool = True,
           progress: bool = True) -> ReplayResult:
    """Send every DICOM instance under ``folder`` to ``target`` (see the module doc)."""
    ae_title, host, port = parse_target(target)
    found = scan(folder)
    groups = [[i.path for i in series.instances] for study in found.studies.values() for series in study.series.values()]
    if not per_series:
        groups = [[p for g in groups for p in g]]
    result = ReplayResult()
    with tqdm(total=sum(len(g) for g in groups), unit="inst", disable=not progress, desc="replay") as bar:
        for paths in groups:
            if paths:
                _send(sorted(paths), ae_title, host, port, calling_ae, result, bar)
    return result
