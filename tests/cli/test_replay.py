"""`glioma-node replay` against a peer that refuses part of a folder or ends the association:
each instance not stored is named with its reason, and the command does not crash."""
from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import MRImageStorage
from pynetdicom import AE, evt

from glioma_node.cli import replay as replay_module
from glioma_node.cli.replay import DIMSE_TIMEOUT_S, NOT_SENT, parse_target, replay
from tests.helpers import shared

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


@pytest.fixture(autouse=True)
def bars(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Every progress bar a replay opens ends at its total (no file counted twice or never)."""
    opened: list[_Bar] = []

    class _Bar:
        def __init__(self, total: int, **_: object) -> None:
            self.total, self.n = total, 0
            opened.append(self)

        def update(self, n: int) -> None:
            self.n += n

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *_: object) -> None:
            return None

    monkeypatch.setattr(replay_module, "tqdm", _Bar)
    yield opened
    assert all(bar.n == bar.total for bar in opened), [(bar.n, bar.total) for bar in opened]


@contextmanager
def _peer(on_store) -> Iterator[str]:
    """A storage SCP on 127.0.0.1 (a port of the system's choosing) that accepts MR Image
    Storage only (uncompressed), as a replay target; stopped on leaving."""
    ae = AE(ae_title="PEER")
    ae.add_supported_context(MRImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None  # not blocking: the server is returned
    try:
        yield f"PEER@127.0.0.1:{server.server_address[1]}"
    finally:
        ae.shutdown()


def _store_all(stored: list[str], status: int = 0x0000):
    def on_store(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        return status
    return on_store


def test_a_refused_sop_class_is_named_and_the_rest_is_sent(folder: Path) -> None:
    stored: list[str] = []
    with _peer(_store_all(stored)) as target:
        result = replay(folder, target, per_series=False, progress=False)
    assert result.sent == 4 and len(stored) == 4 and result.associations == 1
    (failed,) = result.failed
    assert result.sent + len(result.failed) == 5
    assert failed[0].endswith("seg.dcm") and failed[1].startswith("not sent: No presentation context")


def test_a_peer_that_aborts_mid_series_leaves_the_rest_named_unsent(folder: Path) -> None:
    calls: list[int] = []

    def on_store(event):
        calls.append(1)
        if len(calls) == 2:
            event.assoc.abort()
            return 0xC000
        return 0x0000

    started = time.monotonic()
    with _peer(on_store) as target:
        result = replay(folder, target, per_series=True, progress=False)
    assert time.monotonic() - started < DIMSE_TIMEOUT_S / 2  # nothing waited for an answer from a dead association
    reasons = {Path(path).name: why for path, why in result.failed}
    mr = sorted(p.name for p in folder.glob("axial*.dcm"))
    assert result.sent == 1 and calls == [1, 1] and result.associations == 1
    assert result.sent + len(result.failed) == 5 and len(reasons) == 4
    assert reasons[mr[1]] == "no response: the association ended without a valid response (aborted by the peer, " \
        "a lost connection, or an invalid response); the peer may have stored it"
    assert reasons[mr[2]] == reasons[mr[3]] == NOT_SENT
    assert reasons["seg.dcm"] == "not sent: the peer accepted none of the proposed SOP classes and transfer syntaxes"


def test_unreadable_and_incomplete_files_are_named_and_the_rest_is_sent(folder: Path) -> None:
    first = sorted(folder.glob("axial*.dcm"))[0]
    (folder / "cut.dcm").write_bytes(first.read_bytes()[:300])
    no_class = pydicom.dcmread(sorted(folder.glob("axial*.dcm"))[1])
    del no_class.SOPClassUID
    no_class.SOPInstanceUID = no_class.SOPInstanceUID + ".9"
    no_class.save_as(folder / "no-class.dcm")
    long_class = pydicom.dcmread(sorted(folder.glob("axial*.dcm"))[2])
    long_class.SOPClassUID = "1.2." + "3" * 70
    long_class.SOPInstanceUID = long_class.SOPInstanceUID + ".8"
    long_class.save_as(folder / "long-class.dcm", enforce_file_format=False)
    cut_pixels = sorted(folder.glob("axial*.dcm"))[3].read_bytes()
    (folder / "cut-pixels.dcm").write_bytes(cut_pixels[:-5000])
    (folder / "README.txt").write_text("not DICOM")
    stored: list[str] = []
    with _peer(_store_all(stored)) as target:
        result = replay(folder, target, per_series=False, progress=False)
    reasons = {Path(path).name: why for path, why in result.failed}
    assert result.not_dicom == 1 and result.sent == len(stored)
    assert result.sent + len(result.failed) == 9 and len(reasons) == len(result.failed)
    assert {"cut.dcm", "no-class.dcm", "long-class.dcm", "seg.dcm"} <= set(reasons)
    assert reasons["cut.dcm"].startswith("not sent: ") and "cut.dcm" in reasons["cut.dcm"]
    assert reasons["no-class.dcm"] == reasons["long-class.dcm"] == \
        "not sent: no valid SOP Class UID or Transfer Syntax UID in its header"
    # the scan reads headers only; a file cut in its pixel data is either read short and sent
    # (pydicom reads what is there) or named: never a crash, never lost
    assert result.sent == 4 + ("cut-pixels.dcm" not in reasons)


def test_a_warning_status_counts_as_stored(folder: Path) -> None:
    stored: list[str] = []
    with _peer(_store_all(stored, status=0xB000)) as target:  # coercion of data elements
        result = replay(folder, target, per_series=False, progress=False)
    assert result.sent == 4 and len(stored) == 4


def test_a_peer_that_is_not_there_fails_every_instance_with_the_reason(folder: Path) -> None:
    with socket.socket() as held:  # bound, never listening: the port is ours and refuses
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = replay(folder, f"PEER@127.0.0.1:{port}", progress=False)
    reasons = {Path(path).name: why for path, why in result.failed}
    assert result.sent == 0 and result.associations == 0 and len(result.failed) == 5
    assert reasons["seg.dcm"] == f"not sent: 127.0.0.1:{port} could not be reached for an earlier series"
    assert {why for name, why in reasons.items() if name != "seg.dcm"} == {
        f"not sent: no association with 127.0.0.1:{port} (connection refused, timed out or aborted)"}


@pytest.mark.parametrize("target", ["PEER@127.0.0.1:0", "PEER@127.0.0.1:99999", "PEER127.0.0.1:104"])
def test_a_target_out_of_range_is_refused_before_anything_is_read(target: str) -> None:
    with pytest.raises(ValueError, match="port from 1 to 65535"):
        parse_target(target)


@pytest.mark.parametrize(("target", "calling"), [("PE\\ER@127.0.0.1:104", "GLIOMA_REPLAY"),
                                                 ("PEER@127.0.0.1:104", "   "), ("PEER@127.0.0.1:104", "É")])
def test_an_invalid_ae_title_is_refused_before_anything_is_read(tmp_path: Path, target: str, calling: str) -> None:
    with pytest.raises(ValueError, match="AE title"):
        replay(tmp_path / "missing", target, calling_ae=calling, progress=False)
