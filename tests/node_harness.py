"""A glioma-node started as users start it (`glioma-node --config FILE serve`), on free
ports on 127.0.0.1, with its own data directory; and dcmtk as the scanner."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from glioma_node.service.config import DEFAULT_CONFIG
from tests.helpers import REPO, require_tool
from tests.servers import free_port


def node_config(folder: Path, radiogenomics: bool = False, **changes) -> Path:
    """The embedded default configuration with paths made absolute, test ports, a short
    quiet period and fast retries; ``changes`` are dotted keys (``node.min_free_mb``)."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    base = DEFAULT_CONFIG.parent
    seg, rg = raw["models"]["segmentation"], raw["models"]["radiogenomics"]
    for block, keys in ((seg, ("path",)), (rg, ("path",))):
        for key in keys:
            block[key] = str((base / block[key]).resolve())
    rg["enabled"] = radiogenomics
    rg["workers"] = 1
    raw["data_dir"] = str(folder / "data")
    raw["node"].update(port=free_port(), metrics_port=free_port(), min_free_mb=50)
    raw["node"]["allowed_peers"] = [{"ae_title": ae, "host": "127.0.0.1"}
                                    for ae in ("STORESCU", "DCMSEND", "GLIOMA_REPLAY", "SENDER_B")]
    # The node aborts an association its peer left silent for network_timeout_s, and a peer
    # waiting for an acknowledgement is silent: on a loaded 2-core CI machine one fsync was
    # seen to stall past the default 60 s (a kill-9 test lost its retry round to it). The
    # hostile tests set their own short timeouts.
    raw["node"].update(network_timeout_s=180, dimse_timeout_s=180)
    raw["assembly"].update(quiet_period_s=2, force_timeout_s=120)
    raw["dispatch"].update(retry_initial_s=1, retry_max_s=3)
    for key, value in changes.items():
        target = raw
        *parents, leaf = key.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "node.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class RunningNode:
    """`glioma-node serve` in a child process; :meth:`kill` is kill -9."""

    def __init__(self, config: Path, ready=None, cpus: set[int] | None = None):
        """``ready(port)``: how to tell the node answers (default: a plain C-ECHO);
        ``cpus``: the CPUs the node and its children may run on (sched_setaffinity)."""
        self.ready = ready or (lambda port: echo(port, "STORESCU"))
        self.config_path = config
        self.config = yaml.safe_load(config.read_text())
        self.port = self.config["node"]["port"]
        self.metrics_port = self.config["node"]["metrics_port"]
        self.data_dir = Path(self.config["data_dir"])
        self.cpus = cpus
        self.log = open(config.parent / "serve.log", "a")
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log.flush()
        self._log_from = Path(self.log.name).stat().st_size  # wait_log reads this run's lines only
        self.process = subprocess.Popen([sys.executable, "-m", "glioma_node.cli.main", "--config", str(self.config_path),
                                         "serve"],
                                        cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                        preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}; see {self.log.name}")
            if self.ready(self.port):
                return
            time.sleep(0.3)
        raise AssertionError(f"serve did not answer C-ECHO; see {self.log.name}")

    def wait_log(self, text: str, timeout: float = 300) -> None:
        """Wait until the node's log (its worker's included) holds ``text`` (e.g. "worker ready")."""
        path = Path(self.log.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(path, "rb") as handle:
                handle.seek(self._log_from)
                if text.encode() in handle.read():
                    return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in {path} after {timeout:.0f} s")

    def kill(self) -> None:
        """kill -9, no chance to clean up (its worker dies with it)."""
        assert self.process is not None, "the node was not started"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; a node that does not then end cleanly (exit 0) fails the test."""
        process, code = self.process, None
        stopped_here = process is not None and process.poll() is None
        if process is not None and stopped_here:
            process.terminate()
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        if stopped_here and code != 0:
            raise AssertionError(f"serve did not stop cleanly on SIGTERM (exit {code}); see {self.log.name}")

    def health(self) -> dict:
        """/health's report, whether it says ok (200) or degraded (503)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as answer:
            return json.loads(answer.read())

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line)}

    def state(self):
        from glioma_node.service.state import NodeState
        return NodeState(self.data_dir / "state.db")

    def wait_study(self, study_uid: str, states: tuple[str, ...], timeout: float = 600):
        deadline = time.monotonic() + timeout
        study = None
        while time.monotonic() < deadline:
            study = self.state().study(study_uid)
            if study is not None and study.state in states:
                return study
            time.sleep(1)
        raise AssertionError(f"study {study_uid} not in {states} after {timeout:.0f} s: {study}")


def copy_study(source: Path, out: Path, key: str) -> Path:
    """``source`` with new Study/Series/SOP Instance UIDs (a different study, same images);
    ``key`` makes the new UIDs (the same key, the same UIDs)."""
    import pydicom
    from pydicom.uid import UID

    from glioma_node.dicom_io.uids import derived_uid

    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = derived_uid("bench", key, ds.StudyInstanceUID)
        ds.SeriesInstanceUID = derived_uid("bench", key, ds.SeriesInstanceUID)
        ds.SOPInstanceUID = derived_uid("bench", key, ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
        target = out / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    return out


def wait_for(condition, timeout: float, what: str):
    """``condition()``'s first truthy value, polled every 0.05 s; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fill(folder: Path) -> Path:
    """Write one file into ``folder`` until its file system is full; the file (delete it to free the space)."""
    filler = folder / "filler"
    # unbuffered: a buffered file would try again to write what did not fit when it closes
    with open(filler, "wb", buffering=0) as handle:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
    return filler


def echo(port: int, calling_ae: str) -> bool:
    require_tool("echoscu")
    return subprocess.run(["echoscu", "-aet", calling_ae, "-aec", "GLIOMA_NODE", "127.0.0.1", str(port)],
                          capture_output=True, timeout=30).returncode == 0


def storescu(folder: Path, port: int, calling_ae: str = "STORESCU", background: bool = False):
    """dcmtk storescu as the scanner: every file under ``folder``, one association."""
    require_tool("storescu")
    command = ["storescu", "-aet", calling_ae, "-aec", "GLIOMA_NODE", "+sd", "+r", "-nh", "127.0.0.1", str(port),
               str(folder)]
    if background:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def dcmsend(folder: Path, port: int, calling_ae: str = "DCMSEND") -> subprocess.CompletedProcess:
    require_tool("dcmsend")
    return subprocess.run(["dcmsend", "-aet", calling_ae, "-aec", "GLIOMA_NODE", "+sd", "+r", "127.0.0.1", str(port),
                           str(folder)], capture_output=True, text=True, timeout=600)


def orthanc_result_instances(orthanc, study_uid: str) -> list[dict]:
    """The instances of ``study_uid`` in Orthanc whose series came from glioma-node."""
    found = orthanc.post_json("/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid},
                                               "Expand": True})
    series = {}
    out = []
    for instance in found:
        parent = instance["ParentSeries"]
        if parent not in series:
            series[parent] = orthanc.get(f"/series/{parent}")["MainDicomTags"]
        if series[parent].get("SeriesDescription", "").startswith("glioma-node"):
            out.append({**instance, "series": series[parent]})
    return out


class Sender:
    """A scanner that remembers what the node acknowledged: each file of ``folder`` sent
    by C-STORE on one association (in a thread), the SOP Instance UIDs answered 0x0000
    kept in :attr:`acknowledged`. A killed node ends the association; :attr:`error` says so.

    ``retries``: new associations for what was not yet acknowledged when one ended, as a
    scanner retries. pynetdicom's requestor can lose a C-STORE-RSP to its own reactor
    thread under load ("Received unexpected C-STORE service message", then a DIMSE
    timeout): that is the test sender's failure, not the node's."""

    def __init__(self, folder: Path, port: int, calling_ae: str = "GLIOMA_REPLAY", retries: int = 0):
        import threading

        self.files = sorted(p for p in folder.rglob("*") if p.is_file())
        self.port, self.calling_ae, self.retries = port, calling_ae, retries
        self.acknowledged: list[str] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _attempt in range(self.retries + 1):
            self.error = None
            self._send_once()
            if self.error is None:
                return

    def _send_once(self) -> None:
        import pydicom
        from pynetdicom import AE

        try:
            ae = AE(ae_title=self.calling_ae)
            # 180 s, not 30: on a loaded 2-core CI machine (another test writing thousands of DICOM
            # files) one fsync'd acknowledgement was seen to take longer than 60 s; a hang still fails
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 180
            done = set(self.acknowledged)
            pending = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in self.files]
            pending = [(p, h) for p, h in pending if str(h.SOPInstanceUID) not in done]
            files, headers = [p for p, _ in pending], [h for _, h in pending]
            for pair in {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}:
                ae.add_requested_context(*pair)
            assoc = ae.associate("127.0.0.1", self.port, ae_title="GLIOMA_NODE")
            if not assoc.is_established:
                self.error = "association not established"
                return
            for path, header in zip(files, headers):
                status = assoc.send_c_store(path)
                if not status or not assoc.is_established:
                    self.error = "association ended"
                    return
                if status.Status == 0x0000:
                    self.acknowledged.append(str(header.SOPInstanceUID))
            assoc.release()
        except Exception as exc:  # noqa: BLE001 - a killed peer ends the sender, and that is what it reports
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self, timeout: float = 300) -> Sender:
        self.thread.join(timeout)
        return self


def sends_done(node: RunningNode, study_uid: str) -> list[tuple[int, str]]:
    """(version, target) of each finished send job of the study: a result set delivered
    once to one target is one entry (Orthanc keeps a resent instance silently, so its
    own count cannot show a duplicate)."""
    return sorted((j.version, str(j.target)) for j in node.state().jobs(study_uid) if j.kind == "send" and j.state == "done")


class CountingPacs:
    """A Storage SCP on 127.0.0.1 that keeps every reception: :attr:`received` lists the
    SOP Instance UID of each C-STORE it got, repeats included, so a result sent twice
    shows up as twice (Orthanc would keep the one copy silently)."""

    def __init__(self, ae_title: str = "PACS", delay_s: float = 0.0, refuse: tuple[str, ...] = ()):
        """``delay_s``: how long each C-STORE takes to answer (a slow PACS keeps a send going);
        ``refuse``: SOP classes whose presentation contexts it does not accept."""
        import threading

        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        self.port, self.delay_s = free_port(), delay_s
        self.received: list[tuple[str, str]] = []  # (StudyInstanceUID, SOPInstanceUID)
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax and context.abstract_syntax not in refuse:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event) -> int:
        if self.delay_s:
            time.sleep(self.delay_s)
        ds = event.dataset
        with self._lock:
            self.received.append((str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)))
        return 0x0000

    def for_study(self, study_uid: str) -> list[str]:
        with self._lock:
            return [sop for study, sop in self.received if study == study_uid]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


class CeleryWorker:
    """``glioma-node worker`` in its own process group and working directory."""

    def __init__(self, config: Path, folder: Path, cpus: set[int] | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.log = open(folder / "worker.log", "a")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen([sys.executable, "-m", "glioma_node.cli.main", "--config", str(config),
                                         "worker", "--queues", "cpu"],
                                        cwd=folder, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True,
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def runs(self, pid: int) -> bool:
        """Whether process ``pid`` (a heartbeat's writer) belongs to this worker."""
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """kill -9 the worker and its pool processes."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
