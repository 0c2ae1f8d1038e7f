"""`glioma-node replay` against a peer that refuses part of a folder or ends the association:
each instance not stored is named with its reason, and the command does not crash."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from glioma_node.cli.replay import replay
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


def test_a_refused_sop_class_is_named_and_the_rest_is_sent(folder: Path) -> None:
    stored: list[str] = []

    def on_store(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae, port = _peer(on_store)
    try:
        result = replay(folder, f"PEER@127.0.0.1:{port}", per_series=False, progress=False)
    finally:
        ae.shutdown()
    assert result.sent == 4 and len(stored) == 4
    (failed,) = result.failed
    assert failed[0].endswith("seg.dcm") and "presentation context" in failed[1]


def test_a_peer_that_aborts_mid_series_leaves_the_rest_named_unsent(folder: Path) -> None:
    calls: list[int] = []

    def on_store(event):
        calls.append(1)
        if len(calls) == 2:
            event.assoc.abort()
            return 0xC000
        return 0x0000

    ae, port = _peer(on_store)
    try:
        result = replay(folder, f"PEER@127.0.0.1:{port}", per_series=True, progress=False)
    finally:
        ae.shutdown()
    mr_failed = [f for f in result.failed if not f[0].endswith("seg.dcm")]
    assert result.sent == 1
    assert len(mr_failed) == 3 and all("association" in why or why == "no response" for _, why in mr_failed)
    assert result.associations == 2  # the SEG's own series still got its association
