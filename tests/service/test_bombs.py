"""Issue 25 against the real node (`glioma-node serve`): what a small instance may make
the node hold, for every transfer syntax, and a SOP Instance UID stored twice with
different content.

The node runs with low bounds (``node.max_instance_mb`` 64, ``node.max_series_voxels``
2**22) so that the bombs stay small for the test machine: a 200 KB deflated instance
inflating to 200 MB of zeros, 1 KB JPEG 2000 instances declaring 4096 × 4096. Each
case asserts the status and Error Comment the peer gets, that nothing refused reaches
the spool, and that the node still answers C-ECHO.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage

from glioma_node.dicom_io.part10 import part10 as node_part10
from glioma_node.service.intake import StoreStatus
from tests.hostile_data import body_bytes, deflate_bomb, mr_dataset, part10, send_raw
from tests.node_harness import RunningNode, echo, node_config

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bombs")]

MAX_INSTANCE_MB = 64
MAX_VOXELS = 2**22
BOMB_MB = 200  # what the deflate bomb inflates to: over three times the bound
STUDY = "1.2.826.0.1.3680043.9.2525"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs-node")
    running = RunningNode(node_config(folder, **{"node.max_instance_mb": MAX_INSTANCE_MB,
                                                 "node.max_series_voxels": MAX_VOXELS,
                                                 "assembly.force_timeout_s": 3600}))
    yield running
    running.stop()


def _deflate(data: bytes) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return squeeze.compress(data) + squeeze.flush()


def _deflated(ds) -> bytes:
    """``ds`` in Deflated Explicit VR Little Endian, as a Part 10 byte string."""
    return part10(ds, DeflatedExplicitVRLittleEndian, body=_deflate(body_bytes(ds)))


def _deflate_bomb(n: int, megabytes: int) -> bytes:
    """A valid MR slice whose pixel data is ``megabytes`` MB of zeros, deflated (see :func:`deflate_bomb`)."""
    return deflate_bomb(mr_dataset(n, study=STUDY), megabytes)


def _peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _spooled(node: RunningNode, sop: str) -> list[Path]:
    return [p for p in (node.data_dir / "spool").rglob("*.dcm") if p.name == f"{sop}.dcm"]


def _assert_refused(node: RunningNode, status, expected: StoreStatus, sop: str) -> None:
    assert status is not None, "no answer"
    assert status.Status == expected, f"0x{status.Status:04X} {status.get('ErrorComment', '')}"
    assert status.get("ErrorComment"), "a refusal must say why"
    assert not _spooled(node, sop), "a refused instance was written"
    assert echo(node.port, "STORESCU"), "the node stopped answering C-ECHO"


def test_a_deflate_bomb_is_refused_and_never_inflated_whole(node, tmp_path):
    warm = mr_dataset(1, study=STUDY)  # the first C-STORE's own allocations are not the bomb's
    assert send_raw(node.port, _deflated(warm), tmp_path).Status == StoreStatus.SUCCESS
    bomb = _deflate_bomb(2, BOMB_MB)
    assert len(bomb) < 1024**2
    before = _peak_rss_mb(node.process.pid)
    status = send_raw(node.port, bomb, tmp_path)
    after = _peak_rss_mb(node.process.pid)
    _assert_refused(node, status, StoreStatus.OUT_OF_RESOURCES, mr_dataset(2, study=STUDY).SOPInstanceUID)
    assert f"inflates past {MAX_INSTANCE_MB} MB" in status.ErrorComment, status.ErrorComment
    # bounded: at most the 64 MB bound (and a 1 MB step) was held, never the 200 MB it inflates to
    assert after - before < BOMB_MB / 2, f"the node's peak memory rose by {after - before:.0f} MB"


@pytest.mark.parametrize("name, change, expected", [
    ("half the pixel data", dict(PixelData=b"\0" * 256), StoreStatus.PIXEL_DATA_MISMATCH),
    ("no pixel data", dict(PixelData=None), StoreStatus.PIXEL_DATA_MISMATCH),
    ("a billion frames claimed", dict(NumberOfFrames=1_000_000_000), StoreStatus.PIXEL_DATA_MISMATCH),
])
@pytest.mark.parametrize("syntax", ["explicit", "deflated"])
def test_deflated_instances_get_the_answers_of_explicit_vr(node, tmp_path, name, change, expected, syntax):
    ds = mr_dataset(10 + len(name) + (100 if syntax == "deflated" else 0), study=STUDY)
    for keyword, value in change.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    data = _deflated(ds) if syntax == "deflated" else part10(ds, ExplicitVRLittleEndian)
    _assert_refused(node, send_raw(node.port, data, tmp_path), expected, ds.SOPInstanceUID)


def _jpeg2000(n: int, side: int) -> tuple[str, bytes]:
    """An MR slice declaring ``side`` × ``side`` whose pixels are a real JPEG 2000 codestream of zeros."""
    import openjpeg

    ds = mr_dataset(n, study=STUDY, series=f"{STUDY}.{side}", rows=side, columns=side)
    ds.PixelData = encapsulate([bytes(openjpeg.encode(np.zeros((side, side), dtype=np.uint16), codec_format=0))])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds.SOPInstanceUID, part10(ds, JPEG2000Lossless)


def test_compressed_instances_declaring_more_voxels_than_the_bound_are_refused(node, tmp_path):
    for n in range(3):  # a series of them, as in the issue (each one refused on its own)
        sop, data = _jpeg2000(300 + n, 4096)
        assert len(data) < 2048
        status = send_raw(node.port, data, tmp_path)
        _assert_refused(node, status, StoreStatus.OUT_OF_RESOURCES, sop)
        assert status.ErrorComment.startswith(f"16777216 voxels over node.max_series_voxels {MAX_VOXELS}"), \
            status.ErrorComment
    sop, data = _jpeg2000(310, 512)  # compressed and within the bound: stored
    assert send_raw(node.port, data, tmp_path).Status == StoreStatus.SUCCESS and _spooled(node, sop)


def test_the_same_sop_instance_uid_with_other_content_is_counted_and_logged_as_a_conflict(node, tmp_path):
    ds = mr_dataset(400, study=STUDY)
    assert send_raw(node.port, part10(ds), tmp_path).Status == StoreStatus.SUCCESS
    (stored,) = _spooled(node, ds.SOPInstanceUID)
    kept = stored.read_bytes()
    before = node.metrics()
    assert send_raw(node.port, part10(ds), tmp_path).Status == StoreStatus.SUCCESS  # a retry: the same bytes
    ds.PixelData = bytes(reversed(ds.PixelData))
    status = send_raw(node.port, part10(ds), tmp_path)
    assert status.Status == StoreStatus.SUCCESS  # acknowledged, so the sender does not loop on it
    after = node.metrics()
    counted = {key: after.get(key, 0) - before.get(key, 0)
               for key in ("glioma_node_instances_duplicate_total", "glioma_node_instances_conflicting_total")}
    assert counted == {"glioma_node_instances_duplicate_total": 1, "glioma_node_instances_conflicting_total": 1}
    assert stored.read_bytes() == kept  # the first copy stays the one used
    # the node wraps what arrived in its own file meta: that is the received checksum it logs
    received = hashlib.sha256(node_part10(body_bytes(ds), MRImageStorage, ds.SOPInstanceUID,
                                          ExplicitVRLittleEndian)).hexdigest()
    node.wait_log(received, timeout=30)
    lines = [json.loads(line) for line in Path(node.log.name).read_text().splitlines()
             if line.startswith("{") and received in line]
    (entry,) = [e for e in lines if e.get("level") == "warning"]
    assert entry["stored_sha256"] == hashlib.sha256(kept).hexdigest() != entry["received_sha256"] == received
    assert entry["sop_instance"] == ds.SOPInstanceUID and "other content" in entry["message"]
