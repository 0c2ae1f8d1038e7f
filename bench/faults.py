"""Issue 25's faults against the running node (`glioma-node serve`), as `make bench` rows:
figures, not assertions (tests/service/test_bombs.py, test_hostile_peers.py and
test_node.py assert the same faults).

1. Bombs, each against a fresh node with the embedded default configuration: a Deflated
   Explicit VR instance that inflates past ``node.max_instance_mb`` (512 MB), 24 JPEG 2000
   files of about 1 KB declaring 4096 x 4096 sent as one series, two 6-byte PDU headers
   announcing 2 GB from an unknown peer; then ``glioma-node inspect`` offline on the
   folders of the first two. Per case: what the peer got (or the exit code and message),
   the peak resident memory of the node with all its descendants (the sum of VmRSS over
   the process tree, sampled every 50 ms) and the node process's own VmHWM, and for
   inspect its peak (its rusage from wait4).
2. 1000 idle, half-sent HTTP connections to the metrics port: /health and C-ECHO
   latency (median, max of 20) while they are held and, in the same run, with none; how
   many the node dropped at once (``node.http_max_connections``), how many after
   ``node.http_timeout_s``, how many it left open.
3. Disk full during processing (a 300 MB tmpfs as data_dir; root only): filled when the
   node logs "study ready", held full 30 s (C-ECHO and /health every second, a C-STORE
   every 5 s), then freed; whether the node process stayed the same, seconds from the
   freeing to every result object stored at a counting PACS, duplicates.
4. ``node.receivers: 2``, three senders at once, one receiver killed with -9 about 1 s in:
   instances the senders saw acknowledged against those recorded in the state 10 s after
   the senders ended (the node not restarted), and how long until the node logged
   "receiver's spool reconciled".

``python -m bench.faults [--only bombs,idle-http,disk-full,receiver-kill] [--cohort DIR]``
prints one JSON line per row (bench/__main__.py collects them). Traffic stays on
127.0.0.1; every node, PACS and mount started here is stopped or removed at the end.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from tests.helpers import REPO

IDLE = 1000  # idle HTTP connections
NODE_FILES = 1024  # the node's soft limit on descriptors (the usual default), as in test_hostile_peers
BOMB_MB = 600  # what the deflate bomb inflates to (MiB): past the default node.max_instance_mb of 512
JPEG_FILES, JPEG_SIDE = 24, 4096
GIGABYTES = 0x7FFF_FFF0  # a PDU length announced in a 6-byte header (2 GiB)
FULL_HOLD_S = 30
AE_TIMEOUT_S = 10
VERIFICATION = "1.2.840.10008.1.1"


# Memory -------------------------------------------------------------------------------
def status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from the parent pid in each /proc/<pid>/stat
    (not /proc/<pid>/task/*/children, which kernels without CONFIG_PROC_CHILDREN lack)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


class TreeMemory:
    """The sum of VmRSS over ``pid`` and its descendants, sampled every 50 ms in a thread
    (the tree itself re-read every 0.5 s); :attr:`peak_mb` the largest sum seen."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        self.pid, self.interval_s = pid, interval_s
        self.peak_mb = self.now_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        return sum(status_kb(p, "VmRSS") or 0 for p in descendants(self.pid)) / 1024

    def _run(self) -> None:
        tree, n = descendants(self.pid), 0
        while not self._stop.wait(self.interval_s):
            n += 1
            if n % 10 == 0:
                tree = descendants(self.pid)
            self.peak_mb = max(self.peak_mb, sum(status_kb(p, "VmRSS") or 0 for p in tree) / 1024)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mb, 1)


def _hwm_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmHWM")
    return None if kb is None else round(kb / 1024, 1)


def _uptime_s(pid: int) -> float:
    """Seconds since process ``pid`` started (/proc/<pid>/stat's starttime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat[stat.rfind(")") + 2:].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


# Peers --------------------------------------------------------------------------------
def _echo_s(port: int) -> float | None:
    """Seconds for one C-ECHO from an allowed peer (pynetdicom: associate, echo, release); None: no answer."""
    from pynetdicom import AE

    started = time.perf_counter()
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = AE_TIMEOUT_S
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="GLIOMA_NODE")
        if not assoc.is_established:
            return None
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
    except Exception:  # noqa: BLE001 - any failure is "no answer"
        return None
    return time.perf_counter() - started if status and status.Status == 0x0000 else None


def _health_s(port: int) -> tuple[float | None, str]:
    """(seconds, status word) of one GET /health; (None, why) when it was not answered."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=AE_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as answer:  # 503: degraded, still an answer
        body = answer.read()
    except OSError as exc:
        return None, type(exc).__name__
    try:
        word = str(json.loads(body).get("status"))
    except ValueError:
        word = "not json"
    return time.perf_counter() - started, word


def _latency(samples: list[float | None]) -> dict[str, Any]:
    answered = [s for s in samples if s is not None]
    return {"answered": len(answered), "of": len(samples),
            "median_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
            "max_ms": round(max(answered) * 1000, 1) if answered else None}


def _store_files(port: int, files: list[Path], calling_ae: str = "GLIOMA_REPLAY") -> list[tuple[int | None, str]]:
    """C-STORE each file's bytes as they are (no re-encoding), all on one association;
    (status, Error Comment) of each (status None: no answer)."""
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, _config

    metas = [read_file_meta_info(p) for p in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for pair in {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}:
        ae.add_requested_context(*pair)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes, not a re-encoding of them
    answers: list[tuple[int | None, str]] = []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="GLIOMA_NODE")
        if not assoc.is_established:
            return [(None, "association not established")] * len(files)
        for path in files:
            status = assoc.send_c_store(path) if assoc.is_established else None
            answers.append((int(status.Status), str(status.get("ErrorComment", ""))) if status
                           else (None, "no answer"))
        if assoc.is_established:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return answers


def _hex(status: int | None) -> str:
    return "none" if status is None else f"0x{status:04X}"


@contextmanager
def _node(config: Path, wait_worker: bool = True) -> Iterator[Any]:
    """A running node on ``config``, stopped at the end (killed if SIGTERM does not end it)."""
    from tests.node_harness import RunningNode

    node = RunningNode(config)
    try:
        if wait_worker:
            node.wait_log("worker ready", timeout=180)
        yield node
    finally:
        try:
            node.stop()
        except AssertionError as exc:  # a figure, not a test: say so and go on
            print(f"bench.faults: {exc}", file=sys.stderr)


def _last_log(node: Any, since: int, text: str) -> dict | None:
    """The last JSON log record of ``node`` since byte ``since`` whose message holds ``text``."""
    found = None
    with open(node.log.name, "rb") as handle:
        handle.seek(since)
        for line in handle:
            if text.encode() in line:
                try:
                    found = json.loads(line)
                except ValueError:
                    continue
    return found


# 1. Bombs -----------------------------------------------------------------------------
STUDY = "1.2.826.0.1.3680043.9.2525.25"


def _deflate_bomb(folder: Path, megabytes: int) -> Path:
    """A valid MR slice whose pixel data is ``megabytes`` MiB of zeros, deflated (never held
    inflated here), written to ``folder``."""
    from tests.hostile_data import deflate_bomb, mr_dataset

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "deflate-bomb.dcm"
    path.write_bytes(deflate_bomb(mr_dataset(2, study=STUDY, series=f"{STUDY}.1"), megabytes))
    return path


def _jpeg2000_series(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` MR slices of one series, each declaring ``side`` x ``side``, whose pixels
    are one real JPEG 2000 codestream of zeros (encoded once)."""
    import numpy as np
    import openjpeg
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from tests.hostile_data import mr_dataset, part10

    stream = bytes(openjpeg.encode(np.zeros((side, side), dtype=np.uint16), codec_format=0))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        ds = mr_dataset(100 + n, study=STUDY, series=f"{STUDY}.2", rows=side, columns=side)
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        path = folder / f"j2k-{n:02d}.dcm"
        path.write_bytes(part10(ds, JPEG2000Lossless))
        paths.append(path)
    return paths


def _pdu_header(port: int, pdu_type: int) -> str:
    """A 6-byte PDU header announcing 2 GiB from a peer that never associated: what came back."""
    started = time.perf_counter()
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(struct.pack(">BBL", pdu_type, 0, GIGABYTES))
            while chunk := s.recv(65536):
                received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return f"still open after {time.perf_counter() - started:.0f} s"
    took = time.perf_counter() - started
    what = "A-ABORT" if received[:1] == b"\x07" else ("closed, nothing sent" if not received
                                                       else f"{received[:8].hex()}")
    return f"{what} in {took * 1000:.0f} ms"


def _measured(node: Any, run: Callable[[], dict]) -> dict:
    """``run()`` against ``node`` with the node's tree memory sampled around it."""
    pid = node.process.pid
    hwm_before = _hwm_mb(pid)
    memory = TreeMemory(pid)
    before = memory.peak_mb
    started = time.perf_counter()
    try:
        out = run()
    finally:
        peak = memory.stop()
    return {**out, "seconds": round(time.perf_counter() - started, 2), "node_tree_before_mb": round(before, 1),
            "node_tree_peak_mb": peak, "node_hwm_before_mb": hwm_before, "node_hwm_mb": _hwm_mb(pid),
            "node_alive": node.process.poll() is None and _echo_s(node.port) is not None}


# A small launcher: its children's rusage is inspect's own peak (a child's ru_maxrss starts
# from its parent's high-water mark at the fork, so the bench process cannot launch it itself)
_LAUNCHER = ("import resource, subprocess, sys\n"
             "code = subprocess.call(sys.argv[2:])\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
             "sys.exit(code)\n")


def _inspect(folder: Path) -> dict:
    """``glioma-node inspect --json FOLDER`` offline: exit code, what it said, its peak memory
    (its rusage's ru_maxrss, as /usr/bin/time reports it)."""
    out, err, peak = (folder.parent / f"{folder.name}-inspect.{kind}" for kind in ("json", "err", "maxrss"))
    started = time.perf_counter()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.run([sys.executable, "-c", _LAUNCHER, str(peak), sys.executable, "-m",
                                  "glioma_node.cli.main", "inspect", "--json", str(folder)],
                                 cwd=REPO, stdout=stdout, stderr=stderr, timeout=300)
    seconds = time.perf_counter() - started
    message = ""
    try:
        report = json.loads(out.read_text())
        said = [b["reason"] for b in report["bad_files"]]
        said += [s["refused"]["reason"] for st in report["studies"] for s in st["series"] if s["refused"]]
        message = "; ".join(said) or f"{len(report['studies'])} study(ies), nothing refused"
    except (ValueError, KeyError):
        message = err.read_text(errors="replace").strip()[-300:]
    return {"exit_code": process.returncode, "message": message.replace(str(folder) + "/", "")[:300],
            "inspect_peak_mb": round(int(peak.read_text()) / 1024, 1) if peak.is_file() else None,
            "seconds": round(seconds, 2)}


def bombs(work: Path) -> dict:
    """Row 1: each bomb against a fresh node (embedded default configuration), then inspect offline."""
    from tests.node_harness import node_config

    started = time.perf_counter()
    bomb = _deflate_bomb(work / "deflate", BOMB_MB)
    jpegs = _jpeg2000_series(work / "jpeg2000", JPEG_FILES, JPEG_SIDE)
    cases: list[dict] = []

    def deflate(node: Any) -> dict:
        ((status, comment),) = _store_files(node.port, [bomb])
        return {"answer": f"{_hex(status)} {comment}".strip()}

    def jpeg2000(node: Any) -> dict:
        answers = _store_files(node.port, jpegs)
        counted = Counter(_hex(s) for s, _ in answers)
        # what the node then does with the stored series (the assembly's survey): bounded wait
        state = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the assembly has surveyed it, 30 s at most
            study = node.state().study(STUDY)
            state = study and (study.state, study.reason)
            if study is not None and study.state != "received":
                break
            time.sleep(0.5)
        return {"answer": ", ".join(f"{k} x{v}" for k, v in sorted(counted.items())),
                "study_after": f"{state[0]}: {state[1]}" if state else "not recorded"}

    def headers(node: Any) -> dict:
        return {"answer": "; ".join(f"{name}: {_pdu_header(node.port, t)}"
                                    for name, t in (("A-ASSOCIATE-RQ", 0x01), ("P-DATA-TF", 0x04)))}

    runs: list[tuple[str, int, Callable[[Any], dict]]] = [
        (f"Deflate bomb: {BOMB_MB} MiB of zeros", bomb.stat().st_size, deflate),
        (f"{JPEG_FILES} JPEG 2000 files declaring {JPEG_SIDE}x{JPEG_SIDE}, one series",
         sum(p.stat().st_size for p in jpegs), jpeg2000),
        ("two 6-byte PDU headers announcing 2 GiB, unknown peer", 12, headers)]
    for name, size, run in runs:
        with _node(node_config(work / f"node-{len(cases)}")) as node:
            cases.append({"case": name, "bytes_sent": size, **_measured(node, partial(run, node))})
    for name, folder in (("inspect on the Deflate bomb's folder", bomb.parent),
                         ("inspect on the JPEG 2000 series' folder", jpegs[0].parent)):
        cases.append({"case": name, **_inspect(folder)})
    return {"benchmark": "bombs: Deflate, JPEG 2000 series, 2 GiB PDU headers (fresh node each, defaults); inspect",
            "seconds": round(time.perf_counter() - started, 1), "fault": "bombs", "bomb_cases": cases,
            "max_instance_mb": 512, "max_series_voxels": 2**28}


# 2. Idle HTTP connections -------------------------------------------------------------
def _latencies(node: Any, n: int = 20) -> dict:
    health = [_health_s(node.metrics_port)[0] for _ in range(n)]
    echo = [_echo_s(node.port) for _ in range(n)]
    return {"health": _latency(health), "echo": _latency(echo)}


def _closed_now(selector: selectors.BaseSelector, still: set[socket.socket],
                closed_at: dict[socket.socket, float], timeout: float) -> None:
    """Read the sockets that are readable within ``timeout`` s; note when the node closed
    them (EOF or reset)."""
    ready = selector.select(timeout)
    now = time.monotonic()
    for key, _ in ready:
        s = key.fileobj
        assert isinstance(s, socket.socket)
        try:
            if s.recv(65536):
                continue  # an answer before the close: read on
        except BlockingIOError:
            continue
        except OSError:
            pass
        selector.unregister(s)
        still.discard(s)
        closed_at[s] = now


def idle_http(work: Path) -> dict:
    """Row 2: 1000 half-sent HTTP requests held open against the metrics port."""
    from tests.hostile_data import half_sent_http
    from tests.node_harness import node_config

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        return {"benchmark": f"{IDLE} idle HTTP connections", "seconds": 0, "fault": "idle_http",
                "skipped": f"this process may open {hard} files at most; {wanted} needed"}
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    started = time.perf_counter()
    try:
        with _node(node_config(work / "node")) as node:
            timeout_s = float(node.config["node"]["http_timeout_s"])
            _, node_hard = resource.prlimit(node.process.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(node.process.pid, resource.RLIMIT_NOFILE, (NODE_FILES, node_hard))
            calm_fds = len(os.listdir(f"/proc/{node.process.pid}/fd"))
            quiet = _latencies(node)
            selector = selectors.DefaultSelector()  # epoll: select() cannot watch descriptors past 1023
            idle: list[socket.socket] = []
            opened_at: dict[socket.socket, float] = {}
            closed_at: dict[socket.socket, float] = {}
            not_connected = 0
            try:
                for _ in range(IDLE):
                    s, connected = half_sent_http(node.metrics_port)
                    idle.append(s)
                    not_connected += not connected
                    opened_at[s] = time.monotonic()
                    s.setblocking(False)
                    selector.register(s, selectors.EVENT_READ)
                opened = time.monotonic()
                still = set(idle)
                settle = time.monotonic() + 3  # the evictions that opening caused, as they arrive
                while time.monotonic() < settle:
                    before = len(still)
                    _closed_now(selector, still, closed_at, 0.3)
                    if len(still) == before:
                        break
                held_fds = len(os.listdir(f"/proc/{node.process.pid}/fd")) - calm_fds
                open_during = len(still)
                loaded = _latencies(node)
                deadline = opened + timeout_s + 5
                while still and time.monotonic() < deadline:
                    _closed_now(selector, still, closed_at, max(0.0, deadline - time.monotonic()))
                early = sum(1 for s, t in closed_at.items() if t - opened_at[s] < timeout_s - 0.5)
                late = len(closed_at) - early
                left_open = len(still)
                try:
                    dropped = {k: v for k, v in node.metrics().items() if k.startswith("glioma_node_http_dropped")}
                except OSError:
                    dropped = {}
            finally:
                selector.close()
                for s in idle:
                    s.close()
            after = _latencies(node, 5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"benchmark": f"{IDLE} idle half-sent HTTP connections to the metrics port (defaults)",
            "seconds": round(time.perf_counter() - started, 1), "fault": "idle_http", "idle": IDLE,
            "http_timeout_s": timeout_s, "not_connected": not_connected,
            "still_open_while_measuring": open_during, "node_extra_fds_while_held": held_fds,
            "quiet": quiet, "held": loaded, "after": after,
            "dropped_before_timeout": early, "dropped_after_timeout": late, "left_open": left_open,
            "node_dropped_counters": dropped}


# 3. Disk full while processing -----------------------------------------------------------



def _study_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(p for p in sorted(folder.rglob("*")) if p.is_file()),
                               stop_before_pixels=True).StudyInstanceUID)


def disk_full(work: Path, studies: list[Path]) -> dict:
    """Row 3: the data folder (a 300 MB tmpfs) fills up while a study is processed, for 30 s."""
    from tests.helpers import result_kinds
    from tests.node_harness import CountingPacs, fill, node_config, storescu

    title = "disk full while processing: 300 MB tmpfs data_dir, held full 30 s, then freed"
    if os.geteuid() != 0:
        return {"benchmark": title, "seconds": 0, "fault": "disk_full",
                "skipped": "mounting a tmpfs as the data folder needs root"}
    started = time.perf_counter()
    disk = work / "disk"
    disk.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        return {"benchmark": title, "seconds": 0, "fault": "disk_full",
                "skipped": f"mount -t tmpfs failed: {mounted.stderr.strip()[-200:]}"}
    pacs = CountingPacs()
    one = sorted(p for p in studies[1].rglob("*") if p.is_file())[0]
    try:
        elsewhere: dict[str, Any] = {"data_dir": str(disk / "data")}
        config = node_config(work / "node", destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                                           "port": pacs.port}], **elsewhere)
        with _node(config) as node:
            pid = node.process.pid
            uid = _study_uid(studies[0])
            sent = storescu(studies[0], node.port)
            node.wait_log("study ready", timeout=180)
            filler = fill(disk)
            full_at = time.monotonic()
            echoes = health = 0
            health_words: Counter[str] = Counter()
            stores: Counter[str] = Counter()
            n = 0
            while time.monotonic() - full_at < FULL_HOLD_S:
                tick = time.monotonic()
                echoes += _echo_s(node.port) is not None
                took, word = _health_s(node.metrics_port)
                health += took is not None
                health_words[word] += 1
                if n % 5 == 0:
                    stores[_hex(_store_files(node.port, [one])[0][0])] += 1
                n += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            state_full = node.state().study(uid)
            filler.unlink()
            freed = time.monotonic()
            expected = len(result_kinds(False))
            received_at = None
            while time.monotonic() - freed < 600:
                if len(set(pacs.for_study(uid))) >= expected:
                    received_at = time.monotonic()
                    break
                time.sleep(0.2)
            time.sleep(3)  # long enough for a needless second send to show
            received = pacs.for_study(uid)
            study = node.state().study(uid)
            same = node.process.poll() is None and node.process.pid == pid
            uptime = _uptime_s(pid) if same else None
    finally:
        pacs.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return {"benchmark": title, "seconds": round(time.perf_counter() - started, 1), "fault": "disk_full",
            "storescu_rc": sent.returncode, "held_full_s": FULL_HOLD_S,
            "echo_answered": echoes, "health_answered": health, "probes": n, "health_said": dict(health_words),
            "c_store_while_full": dict(stores), "study_while_full": state_full and state_full.state,
            "same_process": same, "node_uptime_s": uptime and round(uptime, 1),
            "freed_to_results_s": received_at and round(received_at - freed, 1),
            "results_received": len(set(received)), "results_expected": expected,
            "duplicates": len(received) - len(set(received)), "study_state": study and study.state,
            "worker_retry_delay_s": node.config["worker"]["retry_delay_s"]}


# 4. A receiver killed -------------------------------------------------------------------
ATTEMPTS = 3  # a fresh node each, while the receiver killed held no association (1 in 8)


def _associations_held(pid: int, port: int) -> int:
    """Established TCP connections on local ``port`` whose socket process ``pid`` holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                held += 1
    return held


def _receiver_kill_once(work: Path, studies: list[Path], third: Path) -> dict:
    import signal

    from tests.node_harness import Sender, node_config, wait_for

    two: dict[str, Any] = {"node.receivers": 2}
    with _node(node_config(work, **two), wait_worker=False) as node:
        node.wait_log("receiver ready", timeout=60)
        counts = node.data_dir / "receivers"
        snapshot = wait_for(lambda: next(counts.glob("*.json"), None), 10, "the receiver's counters")
        victim = int(snapshot.stem)
        log_from = Path(node.log.name).stat().st_size
        senders = [Sender(studies[0], node.port, "STORESCU"), Sender(studies[1], node.port, "SENDER_B"),
                   Sender(third, node.port, "GLIOMA_REPLAY")]
        # ~1 s into the sends: each sender reads its files' headers before it associates
        wait_for(lambda: all(s.acknowledged or not s.thread.is_alive() for s in senders), 120, "the sends to start")
        time.sleep(1.0)
        held = _associations_held(victim, node.port)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        reconciled_at: list[float] = []

        def watch() -> None:  # when the node logs the reconciliation (bounded: 120 s)
            while time.monotonic() - killed < 120:
                if _last_log(node, log_from, "receiver's spool reconciled") is not None:
                    reconciled_at.append(time.monotonic())
                    return
                time.sleep(0.1)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        acknowledged: set[str] = set()
        errors = 0
        for sender in senders:  # bounded: a sender still waiting 120 s after the kill is counted, not awaited
            sender.wait(max(0.0, 120 - (time.monotonic() - killed)))
            acknowledged |= set(sender.acknowledged)
            errors += sender.error is not None
        stalled = [f"{s.calling_ae}: {len(s.acknowledged)} of {len(s.files)}" for s in senders if s.thread.is_alive()]
        senders_done = time.monotonic()
        time.sleep(10)
        state = node.state()
        lost = sum(1 for sop in acknowledged if state.instance_location(sop) is None)
        watcher.join(max(0.0, 120 - (time.monotonic() - killed)))
        record = _last_log(node, log_from, "receiver's spool reconciled")
        alive = node.process.poll() is None
    return {"instances_sent": sum(len(s.files) for s in senders), "associations_on_killed_receiver": held,
            "acknowledged": len(acknowledged), "recorded": len(acknowledged) - lost, "lost": lost,
            "senders_ended_by_kill": errors, "senders_still_sending": stalled,
            "kill_to_senders_done_s": round(senders_done - killed, 1),
            "kill_to_reconciled_s": round(reconciled_at[0] - killed, 1) if reconciled_at else None,
            "reconciled_added": record and record.get("instances_added"), "node_same_process": alive}


def receiver_kill(work: Path, studies: list[Path]) -> dict:
    """Row 4: ``node.receivers: 2``, three senders, a receiver killed with -9 about 1 s after
    each sender's first acknowledgement (again on a fresh node, :data:`ATTEMPTS` at most, while it held none of the three)."""
    from tests.node_harness import copy_study

    started = time.perf_counter()
    third = copy_study(studies[0], work / "third", "bench-receiver-kill")
    for attempt in range(1, ATTEMPTS + 1):
        figures = _receiver_kill_once(work / f"node-{attempt}", studies, third)
        if figures["associations_on_killed_receiver"]:
            break
    return {"benchmark": "a receiver killed (-9) during 3 parallel sends, node.receivers 2, no restart",
            "seconds": round(time.perf_counter() - started, 1), "fault": "receiver_kill", "attempts": attempt,
            **figures}


# Running them -------------------------------------------------------------------------
ROWS = ("bombs", "idle-http", "disk-full", "receiver-kill")


def run(results: list, only: set[str] | None = None, cohort: Path | None = None) -> None:
    """Each row (or those in ``only``) appended to ``results``, each in its own folder."""
    from glioma_node.training.synth.cohort import write_cohort

    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        wanted = [r for r in ROWS if not only or r in only]
        studies: list[Path] = []
        if {"disk-full", "receiver-kill"} & set(wanted):
            where = cohort or work / "cohort"
            write_cohort(where, cases=2, seed=21, progress=False)  # kept cases are not written again
            studies = sorted(p for p in (where / "dicom").iterdir() if p.is_dir())[:2]
        rows: dict[str, Callable[[], dict]] = {
            "bombs": lambda: bombs(work / "bombs"), "idle-http": lambda: idle_http(work / "idle-http"),
            "disk-full": lambda: disk_full(work / "disk-full", studies),
            "receiver-kill": lambda: receiver_kill(work / "receiver-kill", studies)}
        for name in wanted:
            try:
                row = rows[name]()
            except Exception as exc:  # noqa: BLE001 - one row failing leaves the others' figures
                row = {"benchmark": f"fault row {name}", "seconds": 0, "fault": name.replace("-", "_"),
                       "error": f"{type(exc).__name__}: {exc}"[:500]}
            results.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(work / name, ignore_errors=True)


def summary(r: dict) -> list[str]:
    """The lines `make bench` prints for one fault row."""
    fault = r.get("fault")
    if "error" in r or "skipped" in r:
        return [f"{r['benchmark']}: {r.get('error') or 'skipped: ' + r['skipped']}"]
    if fault == "bombs":
        lines = []
        for c in r["bomb_cases"]:
            if "exit_code" in c:
                lines.append(f"bomb {c['case']}: exit {c['exit_code']}, peak {c['inspect_peak_mb']} MB, "
                             f"{c['seconds']} s: {c['message'][:160]}")
            else:
                lines.append(f"bomb {c['case']} ({c['bytes_sent']} bytes): {c['answer'][:160]}; node+children "
                             f"{c['node_tree_before_mb']} -> peak {c['node_tree_peak_mb']} MB, node VmHWM "
                             f"{c['node_hwm_before_mb']} -> {c['node_hwm_mb']} MB, still answers: {c['node_alive']}"
                             + (f"; study then {c['study_after']}" if "study_after" in c else ""))
        return lines
    if fault == "idle_http":
        def both(x: dict) -> str:
            return (f"/health median {x['health']['median_ms']} ms max {x['health']['max_ms']} ms "
                    f"({x['health']['answered']}/{x['health']['of']}), C-ECHO median {x['echo']['median_ms']} ms "
                    f"max {x['echo']['max_ms']} ms ({x['echo']['answered']}/{x['echo']['of']})")
        return [f"{r['idle']} idle HTTP connections: with none {both(r['quiet'])}",
                f"  while held ({r['still_open_while_measuring']} still open, node +{r['node_extra_fds_while_held']} "
                f"fds): {both(r['held'])}",
                f"  dropped at once {r['dropped_before_timeout']}, after http_timeout_s {r['http_timeout_s']:g} s "
                f"{r['dropped_after_timeout']}, left open {r['left_open']}; node counters {r['node_dropped_counters']}"]
    if fault == "disk_full":
        return [f"disk full {r['held_full_s']} s while processing: C-ECHO {r['echo_answered']}/{r['probes']}, "
                f"/health {r['health_answered']}/{r['probes']} {r['health_said']}, C-STORE {r['c_store_while_full']}; "
                f"same process: {'yes' if r['same_process'] else 'no'} (uptime {r['node_uptime_s']} s); freed -> "
                f"all results at the PACS in {r['freed_to_results_s']} s (worker.retry_delay_s "
                f"{r['worker_retry_delay_s']}); {r['results_received']}/{r['results_expected']} results, "
                f"{r['duplicates']} duplicates"]
    if fault == "receiver_kill":
        return [f"receiver killed holding {r['associations_on_killed_receiver']} of 3 associations (attempt "
                f"{r['attempts']}): {r['acknowledged']} of {r['instances_sent']} instances acknowledged, "
                f"{r['recorded']} recorded 10 s after the senders ended, {r['lost']} lost; reconciled "
                f"{r['kill_to_reconciled_s']} s after the kill ({r['reconciled_added']} added); "
                f"{r['senders_ended_by_kill']} sender(s) cut off"
                + (f", still sending 120 s after the kill: {r['senders_still_sending']}" if r.get("senders_still_sending")
                   else "") + f"; node same process: {r['node_same_process']}"]
    return []


def main() -> None:
    import argparse

    from glioma_node.dicom_io.scan import tolerate_nonconformant_values

    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--cohort", type=Path, default=None,
                        help="where the 2-case synthetic cohort is (or is written); default a temporary folder")
    parser.add_argument("--summary", action="store_true", help="print the summary lines too (to stderr)")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    unknown = only - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    tolerate_nonconformant_values()
    results: list[dict] = []
    run(results, only, args.cohort)
    if args.summary:
        for r in results:
            for line in summary(r):
                print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
