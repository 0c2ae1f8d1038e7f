"""`glioma-node replay` against a peer that refuses part of a folder or ends the association:
each instance not stored is named with its reason, and the command does not crash."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from glioma_node.cli.replay import DIMSE_TIMEOUT_S, NOT_SENT, parse_target, replay
from tests.helpers import shared
from tests.servers import free_port

EPI = "dcm_qa_nih/ge_mr750_epi_fmri"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four real GE MR instances of one series and a reference DICOM SEG (another SOP class)."""
    out = tmp_path / "study"
    out.mkdir()
    for path in sorted(shared(EPI).glob("*.dcm"))[:4]:
        shutil.copy(path, out / path.name)
    shutil.copy(shared("dcmqi", "sr-example", "seg.dcm"), out / "seg.dcm")
    return out


def _peer(on_store) -> tuple[AE, int]:
    """A storage SCP on 127.0.0.1 that accepts MR Image Storage only (uncompressed)."""
    ae = AE(ae_title="PEER")
    ae.add_supported_context(MRImageStorage)
    port = free_port()
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return ae, port


def _store_all(stored: list[str]):
    def on_store(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000
    return on_store


def test_a_refused_sop_class_is_named_and_the_rest_is_sent(folder: Path) -> None:
    stored: list[str] = []
    ae, port = _peer(_store_all(stored))
    try:
        result = replay(folder, f"PEER@127.0.0.1:{port}", per_series=False, progress=False)
    finally:
        ae.shutdown()
    assert result.sent == 4 and len(stored) == 4 and result.associations == 1
    (failed,) = result.failed
    assert failed[0].endswith("seg.dcm") and failed[1].startswith("not sent: No presentation context")


def test_a_peer_that_aborts_mid_series_leaves_the_rest_named_unsent(folder: Path) -> None:
    calls: list[int] = []

    def on_store(event):
        calls.append(1)
        if len(calls) == 2:
            event.assoc.abort()
            return 0xC000
        return 0x0000

    ae, port = _peer(on_store)
    started = time.monotonic()
    try:
        result = replay(folder, f"PEER@127.0.0.1:{port}", per_series=True, progress=False)
    finally:
        ae.shutdown()
    assert time.monotonic() - started < DIMSE_TIMEOUT_S / 2  # nothing waited for an answer from a dead association
    reasons = {Path(path).name: why for path, why in result.failed}
    mr = sorted(p.name for p in folder.glob("axial*.dcm"))
    assert result.sent == 1 and calls == [1, 1] and result.associations == 1
    assert reasons[mr[1]] == "no response: the peer aborted the association or the connection was lost; the peer " \
        "may have stored it"
    assert reasons[mr[2]] == reasons[mr[3]] == NOT_SENT
    assert reasons["seg.dcm"] == "not sent: the peer accepted none of the proposed SOP classes and transfer syntaxes"


def test_unreadable_and_incomplete_files_are_named_and_the_rest_is_sent(folder: Path) -> None:
    first = sorted(folder.glob("axial*.dcm"))[0]
    (folder / "cut.dcm").write_bytes(first.read_bytes()[:300])
    no_class = pydicom.dcmread(sorted(folder.glob("axial*.dcm"))[1])
    del no_class.SOPClassUID
    no_class.SOPInstanceUID = no_class.SOPInstanceUID + ".9"
    no_class.save_as(folder / "no-class.dcm")
    (folder / "README.txt").write_text("not DICOM")
    stored: list[str] = []
    ae, port = _peer(_store_all(stored))
    try:
        result = replay(folder, f"PEER@127.0.0.1:{port}", per_series=False, progress=False)
    finally:
        ae.shutdown()
    reasons = {Path(path).name: why for path, why in result.failed}
    assert result.sent == 4 and len(stored) == 4 and result.not_dicom == 1
    assert set(reasons) == {"cut.dcm", "no-class.dcm", "seg.dcm"}
    assert reasons["cut.dcm"].startswith("not sent: ") and "cut.dcm" in reasons["cut.dcm"]
    assert reasons["no-class.dcm"] == "not sent: no SOP Class UID or Transfer Syntax UID in its header"


def test_a_peer_that_is_not_there_fails_every_instance_with_the_reason(folder: Path) -> None:
    result = replay(folder, f"PEER@127.0.0.1:{free_port()}", progress=False)
    assert result.sent == 0 and result.associations == 0 and len(result.failed) == 5
    port = result.failed[0][1].split("127.0.0.1:")[1].split(" ")[0]
    assert {why for _, why in result.failed} == {
        f"not sent: no association with 127.0.0.1:{port} (connection refused, timed out or aborted)"}


@pytest.mark.parametrize("target", ["PEER@127.0.0.1:0", "PEER@127.0.0.1:99999", "PEER127.0.0.1:104"])
def test_a_target_out_of_range_is_refused_before_anything_is_read(target: str) -> None:
    with pytest.raises(ValueError, match="port from 1 to 65535"):
        parse_target(target)
