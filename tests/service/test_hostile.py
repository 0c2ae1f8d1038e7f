"""The hostile-input suite: the real node (`glioma-node serve`) against crafted datasets,
dcmtk and pynetdicom peers that misbehave, and silent connections, with and without TLS.

Every case asserts the answer the peer gets, that the node still answers C-ECHO after
it, and that every instance the node acknowledged is in its spool; and for every case
the autouse fixture :func:`outside` asserts that the node wrote nothing outside its data
directory: not beside it (its folder, walked whole), not in its working directory (the
checkout) and not in the temporary directory (both walked two levels deep, names only).
The checkout and /tmp are shared with other tests (and other pytest-xdist workers), so
a new path there counts only when it bears this suite's marks: a crafted UID or the
escape token in its name or its bytes, or the name of a data-directory part (spool,
results, outbox, state.db) appearing in the working directory itself.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage
from pynetdicom import AE

from glioma_node.service.intake import StoreStatus
from tests.helpers import REPO
from tests.hostile_data import body_bytes, explicit_element, mr_dataset, nested_sequences, part10
from tests.hostile_data import send_raw as _send_raw
from tests.node_harness import RunningNode, echo, node_config

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile")]

MAX_ASSOCIATIONS = 4
TIMEOUT_S = 3  # the node's ACSE and network timeouts in this suite


ESCAPE_MARK = "glioma-hostile-"


def _escape() -> str:
    """A path a traversal UID aims at; it must never come to exist."""
    return f"/tmp/{ESCAPE_MARK}{uuid.uuid4().hex[:12]}"


# Every UID this suite sends (standard UIDs and the shared implementation class UID left
# out), as the marks that tell a file the node made from our traffic from anyone else's.
SENT_UIDS: set[bytes] = set()
_UID = re.compile(rb"[0-9]+(?:\.[0-9]+){3,}")
_COMMON_UIDS = (b"1.2.840.10008.", b"1.2.826.0.1.3680043.10.1418.99")


def send_raw(port: int, data: bytes, folder: Path):
    """:func:`tests.hostile_data.send_raw`, remembering the UIDs the bytes carry."""
    SENT_UIDS.update(uid for uid in _UID.findall(data) if len(uid) >= 10 and not uid.startswith(_COMMON_UIDS))
    return _send_raw(port, data, folder)


def _listing(root: Path, depth: int, skip: frozenset[Path] = frozenset()) -> set[Path]:
    """The paths under ``root`` down to ``depth`` levels below it (0: its entries only), by
    name only; ``__pycache__`` folders and ``skip`` left out, unreadable folders passed by."""
    found: set[Path] = set()

    def walk(folder: Path, level: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return  # gone meanwhile, or not ours to read
        for entry in entries:
            path = Path(entry.path)
            if path in skip or entry.name == "__pycache__":
                continue
            found.add(path)
            if level < depth and entry.is_dir(follow_symlinks=False):
                walk(path, level + 1)

    walk(root, 0)
    return found


def _marked(path: Path) -> bool:
    """Whether ``path`` bears one of this suite's marks in its name or (a file) its bytes."""
    marks = [ESCAPE_MARK.encode(), *SENT_UIDS]
    if any(mark in os.fsencode(path.name) for mark in marks):
        return True
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 64 << 20:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return any(mark in data for mark in marks)


NODE_PARTS = ("spool", "results", "outbox", "state.db")  # what a data directory holds


class OutsideWrites:
    """Snapshots, taken before a test, of where a node could write besides its data directory."""

    def __init__(self, pytest_roots: frozenset[Path], cwd: Path = REPO, temps: tuple[Path, ...] = ()) -> None:
        """``cwd``: the node's working directory (tests/node_harness.py starts it in the
        checkout); ``temps``: the temporary directories (default /tmp and $TMPDIR)."""
        self.cwd = cwd
        self.roots = {cwd: frozenset(cwd / name for name in (".git", ".venv", ".mypy_cache", ".pytest_cache",
                                                             ".ruff_cache", ".hypothesis"))}
        for temp in temps or (Path("/tmp"), Path(tempfile.gettempdir())):
            self.roots[temp] = pytest_roots  # other tests' own tmp folders, pytest-xdist workers' included
        self.before = {root: _listing(root, 1, skip) for root, skip in self.roots.items()}
        self.folders: list[tuple[Path, Path, set[Path]]] = []

    def watch(self, folder: Path, data_dir: Path) -> None:
        """Watch a node's own folder (node.yaml, serve.log and ``data_dir``) whole: call it
        before the node starts. Nothing but the node and its test writes there."""
        self.folders.append((folder, data_dir, _listing(folder, 64)))

    def found(self) -> list[str]:
        """What appeared since the snapshots that the node made, outside its data directory."""
        made = []
        for root, skip in self.roots.items():
            for path in sorted(_listing(root, 1, skip) - self.before[root]):
                if _marked(path) or (root == self.cwd and path.parent == root and path.name.startswith(NODE_PARTS)):
                    made.append(str(path))
        for folder, data_dir, before in self.folders:
            for path in sorted(_listing(folder, 64) - before):
                if path != data_dir and not path.is_relative_to(data_dir) \
                        and path not in (folder / "node.yaml", folder / "serve.log"):
                    made.append(str(path))
        return made


def _traversal(target: str) -> str:
    return "../" * 12 + target.lstrip("/")


def _crafted() -> list[tuple[str, object, int]]:
    """(name, how to build it, the status the node must answer) of each crafted C-STORE."""
    def with_(**change):
        def build():
            # a SOP Instance UID of its own per case, the same in every run
            ds = mr_dataset(zlib.crc32(repr(sorted(change.items())).encode()) % 100_000 + 100)
            for keyword, value in change.items():
                if value is None:
                    delattr(ds, keyword)
                else:
                    setattr(ds, keyword, value)
            return part10(ds)
        return build

    def raw(make_body, claimed=ExplicitVRLittleEndian):
        def build():
            ds = mr_dataset(7777)
            return part10(ds, claimed, body=make_body(ds))
        return build

    def four_gb(ds):
        del ds.PixelData
        return body_bytes(ds) + explicit_element(0x7FE0, 0x0010, b"OW", b"\0" * 512, length=0xFFFFFFF0)

    return [
        ("traversal StudyInstanceUID", "traversal", StoreStatus.INVALID_UID),
        ("letters in SeriesInstanceUID", with_(SeriesInstanceUID="1.2.840.abc"), StoreStatus.INVALID_UID),
        ("SOPInstanceUID of 80 digits", with_(SOPInstanceUID="1." + "9" * 80), StoreStatus.INVALID_UID),
        ("half the pixel data", with_(PixelData=b"\0" * 256), StoreStatus.PIXEL_DATA_MISMATCH),
        ("0-length pixel data", with_(PixelData=b""), StoreStatus.PIXEL_DATA_MISMATCH),
        ("no pixel data", with_(PixelData=None), StoreStatus.PIXEL_DATA_MISMATCH),
        ("a billion frames claimed", with_(NumberOfFrames=1_000_000_000), StoreStatus.PIXEL_DATA_MISMATCH),
        ("4 GB pixel data length field", raw(four_gb), StoreStatus.PIXEL_DATA_MISMATCH),
        ("implicit body under explicit VR", raw(lambda ds: body_bytes(ds, implicit=True)),
         StoreStatus.TRANSFER_SYNTAX_MISMATCH),
        ("explicit body under implicit VR", raw(lambda ds: body_bytes(ds), ImplicitVRLittleEndian),
         StoreStatus.TRANSFER_SYNTAX_MISMATCH),
        ("native pixels under JPEG 2000", raw(lambda ds: body_bytes(ds), JPEG2000Lossless),
         StoreStatus.TRANSFER_SYNTAX_MISMATCH),
        ("sequences nested 3000 deep", raw(lambda ds: nested_sequences(3000)), StoreStatus.CANNOT_UNDERSTAND),
        ("an odd VR", raw(lambda ds: explicit_element(0x0008, 0x0016, b"ZZ", b"1.2\0")),
         StoreStatus.TRANSFER_SYNTAX_MISMATCH),
        ("tolerated: trailing NUL and a leading zero", with_(StudyInstanceUID="1.2.826.0.1.03680043.9\0"),
         StoreStatus.SUCCESS),
        ("an 8 MB private element", "large", StoreStatus.SUCCESS),
        ("Japanese character set", "japanese", StoreStatus.SUCCESS),
    ]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-node")
    running = RunningNode(node_config(folder, **{"node.max_associations": MAX_ASSOCIATIONS,
                                                 "node.acse_timeout_s": TIMEOUT_S,
                                                 "node.network_timeout_s": TIMEOUT_S,
                                                 "assembly.force_timeout_s": 3600}))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def outside(request, tmp_path_factory) -> Iterator[OutsideWrites]:
    """Every test of the file: the node wrote nothing outside its data directory (see the
    module doc). The module's node is watched when the test uses it; a test that starts
    its own node calls :meth:`OutsideWrites.watch` before starting it."""
    base = tmp_path_factory.getbasetemp().resolve()
    # pytest's tmp root (/tmp/pytest-of-<user>) holds every test's and every worker's tmp folders
    pytest_roots = frozenset(temp / base.relative_to(temp.resolve()).parts[0]
                             for temp in (Path("/tmp"), Path(tempfile.gettempdir()))
                             if base.is_relative_to(temp.resolve()))
    watcher = OutsideWrites(pytest_roots)
    if "node" in request.fixturenames:
        running = request.getfixturevalue("node")
        watcher.watch(running.config_path.parent, running.data_dir)
    yield watcher
    made = watcher.found()
    assert not made, f"the node wrote outside its data directory: {made}"


def test_the_outside_watch_sees_what_a_node_could_leave_and_nothing_else(tmp_path):
    cwd, temp, folder = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "node"
    for path in (cwd / "glioma_node", temp / "pytest-of-someone", temp / "old", folder / "data" / "spool"):
        path.mkdir(parents=True)
    watcher = OutsideWrites(frozenset({temp / "pytest-of-someone"}), cwd, (temp,))
    watcher.watch(folder, folder / "data")
    SENT_UIDS.add(b"2.25.918273645546372819")
    made = [folder / "data" / "spool" / "a.dcm", folder / "stray.dcm", folder / "tmp" / "x",
            cwd / "spool", cwd / "glioma_node" / "2.25.918273645546372819.dcm", temp / f"{ESCAPE_MARK}abc",
            temp / "old" / "tmpq1w2e3"]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"DICM 2.25.918273645546372819" if path.name == "tmpq1w2e3" else b"x")
    (cwd / "notes.txt").write_text("another engineer's file")  # shared places: unmarked is someone else's
    (temp / "old" / "tmp-other").write_bytes(b"DICM 1.2.3.4.5.6")
    (temp / "pytest-of-someone" / f"{ESCAPE_MARK}in-another-test").write_text("")
    assert sorted(watcher.found()) == sorted(str(p) for p in [*made[1:], folder / "tmp"])


def _assert_node_well(node: RunningNode, acknowledged: list[str], answers: Callable[[int], bool] | None = None) -> None:
    """The node answers (a plain C-ECHO, or ``answers(port)``) and recorded every
    instance it acknowledged."""
    assert (answers or (lambda port: echo(port, "STORESCU")))(node.port), "the node stopped answering C-ECHO"
    state = node.state()
    lost = [sop for sop in acknowledged if state.instance_location(sop) is None]
    assert not lost, f"acknowledged but not recorded: {lost}"


@pytest.mark.parametrize("name, build, expected", _crafted(), ids=[c[0] for c in _crafted()])
def test_crafted_dataset_gets_its_answer(node, tmp_path, name, build, expected):
    escape = _escape()
    if build == "traversal":
        data = part10(mr_dataset(1, study=_traversal(escape)))
    elif build == "large":
        ds = mr_dataset(2)
        ds.add_new(0x00091010, "OB", b"\1" * (8 * 1024 * 1024))
        data = part10(ds)
    elif build == "japanese":
        data = _japanese()
    else:
        data = build()
    status = send_raw(node.port, data, tmp_path)
    assert status is not None, f"{name}: no answer"
    assert status.Status == expected, f"{name}: 0x{status.Status:04X} {status.get('ErrorComment', '')}"
    if expected != StoreStatus.SUCCESS:
        assert status.get("ErrorComment"), f"{name}: a refusal must say why"
    assert not Path(escape).exists(), "a UID chose a path outside the data directory"
    acknowledged = []
    if expected == StoreStatus.SUCCESS:  # what was stored is a file dcmtk reads
        sop = str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID).rstrip("\0 ")
        acknowledged.append(sop)
        spooled = [p for p in (node.data_dir / "spool").rglob("*.dcm") if p.name == f"{sop}.dcm"]
        assert spooled and subprocess.run(["dcmdump", "-q", str(spooled[0])], capture_output=True).returncode == 0
    _assert_node_well(node, acknowledged)


def _japanese() -> bytes:
    ds = mr_dataset(3, charset=["", "ISO 2022 IR 87"])
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    return part10(ds)


def test_a_reused_sop_instance_uid_in_another_study_is_refused_and_leaves_no_file(node, tmp_path):
    ds = mr_dataset(41, study="1.2.826.0.1.3680043.9.41")
    assert send_raw(node.port, part10(ds), tmp_path).Status == StoreStatus.SUCCESS
    before = sorted(p.name for p in (node.data_dir / "spool").rglob("*.dcm"))
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.42"
    status = send_raw(node.port, part10(ds), tmp_path)
    assert status.Status == StoreStatus.SOP_INSTANCE_CONFLICT and "another study" in status.ErrorComment
    assert sorted(p.name for p in (node.data_dir / "spool").rglob("*.dcm")) == before
    _assert_node_well(node, [ds.SOPInstanceUID])


def test_an_unknown_peer_gets_a_proper_association_reject(node):
    result = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "GLIOMA_NODE", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Association Rejected" in output, output
    assert "Calling AE Title Not Recognized" in output and "Peer aborted" not in output, output
    _assert_node_well(node, [])


def test_a_wrong_called_ae_title_is_rejected(node):
    result = subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "SOMEONE_ELSE", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Called AE Title Not Recognized" in output, output
    _assert_node_well(node, [])


def test_a_connection_that_says_nothing_is_dropped_after_the_acse_timeout(node):
    silent = socket.create_connection(("127.0.0.1", node.port))
    try:
        started = time.monotonic()
        assert echo(node.port, "STORESCU")  # others are served meanwhile
        silent.settimeout(TIMEOUT_S * 5)
        assert silent.recv(1) == b""  # the node closed it
        assert time.monotonic() - started < TIMEOUT_S * 5
    finally:
        silent.close()
    _assert_node_well(node, [])


def test_an_association_that_never_ends_is_aborted_after_the_network_timeout(node):
    ae = AE(ae_title="GLIOMA_REPLAY")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="GLIOMA_NODE")
    assert assoc.is_established
    assert echo(node.port, "STORESCU")
    deadline = time.monotonic() + TIMEOUT_S * 5
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not assoc.is_established and (assoc.is_aborted or assoc.is_released)
    _assert_node_well(node, [])


def test_a_hundred_associations_at_once_against_the_limit(node):
    results: list[str] = []
    spans: list[tuple[float, float]] = []  # (established, ended) of each accepted association
    lock = threading.Lock()
    hold = threading.Event()

    def one() -> None:
        ae = AE(ae_title="GLIOMA_REPLAY")
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.acse_timeout = 30
        assoc = ae.associate("127.0.0.1", node.port, ae_title="GLIOMA_NODE")
        with lock:
            results.append("accepted" if assoc.is_established else "rejected" if assoc.is_rejected else "other")
        if assoc.is_established:
            began = time.monotonic()
            while assoc.is_established and not hold.is_set():  # the node may time an idle one out
                time.sleep(0.02)
            ended = time.monotonic()
            if assoc.is_established:
                assoc.release()
            with lock:
                spans.append((began, ended))

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(results) < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    hold.set()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 100 and results.count("other") == 0, results
    assert results.count("accepted") >= 1 and results.count("rejected") >= 1
    # never more than the limit at once (a slot frees when an idle one times out)
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    at_once = peak = 0
    for _, step in events:
        at_once += step
        peak = max(peak, at_once)
    assert peak <= MAX_ASSOCIATIONS, peak
    _assert_node_well(node, [])


# TLS -------------------------------------------------------------------------------
def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=glioma-node test CA")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {p.stem + p.suffix: p for p in folder.iterdir()}


def test_with_tls_an_idle_connection_blocks_nobody(tmp_path, outside):
    certs = _certificates(tmp_path)
    config = node_config(tmp_path / "tls-node", **{
        "node.tls": {"certificate": str(certs["server.crt"]), "private_key": str(certs["server.key"]),
                     "ca_certificates": str(certs["ca.crt"])},
        "node.tls_handshake_timeout_s": TIMEOUT_S})
    outside.watch(config.parent, Path(yaml.safe_load(config.read_text())["data_dir"]))
    node = RunningNode(config, ready=lambda port: _tls_echo(port, certs))
    silent = socket.create_connection(("127.0.0.1", node.port))  # not even a peer we know
    try:
        started = time.monotonic()
        assert _tls_echo(node.port, certs), "a TLS peer was held up by a silent connection"
        assert time.monotonic() - started < TIMEOUT_S
        silent.settimeout(TIMEOUT_S * 5)
        assert silent.recv(1) == b""  # the handshake timed out and the socket was closed
        _assert_node_well(node, [], answers=lambda port: _tls_echo(port, certs))
    finally:
        silent.close()
        node.stop()


def _tls_echo(port: int, certs: dict[str, Path]) -> bool:
    return subprocess.run(["echoscu", "-aet", "STORESCU", "-aec", "GLIOMA_NODE", "+tls", str(certs["client.key"]),
                           str(certs["client.crt"]), "+cf", str(certs["ca.crt"]), "127.0.0.1", str(port)],
                          capture_output=True, timeout=30).returncode == 0
