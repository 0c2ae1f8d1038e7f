"""`make demo`: the node's main job on the embedded default, end to end on this machine.

Starts a local PACS (Orthanc when installed, else a small storage SCP writing to a
folder), starts the node with the default configuration pointed at it, synthesises a
glioma study, replays it the way a scanner sends, waits for the results to arrive in
the PACS, and prints what a radiologist would want to know and where to look.
Everything listens on 127.0.0.1 only. Research use only, not for diagnosis.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt

from glioma_node.cli.replay import replay
from glioma_node.core.targets import TARGET_INFO
from glioma_node.service.config import load_config, with_overrides
from glioma_node.service.serve import Node


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPacs:
    """Orthanc (HTTP on 127.0.0.1, remote access off, only the node may store) if installed,
    else a pynetdicom storage SCP that writes what it receives under ``folder/received``."""

    def __init__(self, folder: Path, node_ae: str):
        self.folder, self.ae_title, self.port = folder, "DEMO_PACS", free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.orthanc = shutil.which("Orthanc")
        if self.orthanc:
            self.http_port = free_port()
            config = {"Name": "glioma-node-demo", "DicomAet": self.ae_title, "DicomPort": self.port,
                      "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                      "StorageDirectory": str(folder / "orthanc-db"), "IndexDirectory": str(folder / "orthanc-db"),
                      "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,
                      "DicomModalities": {"glioma-node": [node_ae, "127.0.0.1", 104]}}
            (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
            self.log = open(folder / "orthanc.log", "w")
            self.process = subprocess.Popen([self.orthanc, str(folder / "orthanc.json")], stdout=self.log,
                                            stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{self.http_port}"
            for _ in range(200):
                try:
                    urllib.request.urlopen(self.url + "/system", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.1)
        else:
            self.received = folder / "received"
            self.received.mkdir(exist_ok=True)
            ae = AE(ae_title=self.ae_title)
            for context in AllStoragePresentationContexts:
                if context.abstract_syntax:
                    ae.add_supported_context(context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

            def on_store(event: evt.Event) -> int:
                ds = event.dataset
                ds.file_meta = event.file_meta
                ds.save_as(self.received / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
                return 0x0000
            self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
            self.url = str(self.received)

    def result_count(self, study_uid: str) -> int:
        """How many result objects the PACS holds now."""
        if not self.orthanc:
            return len(list(self.received.glob("*.dcm")))
        request = urllib.request.Request(self.url + "/tools/find", method="POST", data=json.dumps(
            {"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            series = json.loads(response.read())
        return sum(len(s["Instances"]) for s in series
                   if s["MainDicomTags"].get("SeriesDescription", "").startswith("glioma-node"))

    def stop(self) -> None:
        """Stop the PACS (Orthanc or the in-process store) and close its log."""
        if self.orthanc:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.log.close()
        elif self.server is not None:
            self.server.shutdown()


def _report(findings: dict, turnaround_s: float, folder: Path, pacs: LocalPacs) -> str:
    seg = findings["segmentation"]["volumes_ml"]
    lines = ["", "glioma-node demo: RESEARCH USE ONLY, NOT FOR DIAGNOSIS", "",
             f"  tumour volumes: whole {seg['whole_tumour']:.1f} ml, enhancing {seg['enhancing']:.1f} ml, "
             f"necrotic core {seg['necrotic_core']:.1f} ml, edema {seg['edema']:.1f} ml"]
    rg = findings.get("radiogenomics")
    if rg:
        for target, p in rg["predictions"].items():
            name = TARGET_INFO[target].title if target in TARGET_INFO else target
            lines.append(f"  {name}: {p['status']} (probability {p['probability']:.2f}, threshold {p['threshold']:.2f})")
        if rg.get("risk"):
            inputs = ", ".join(f"{m.upper()} {src}" for m, src in rg["risk"].get("inputs", {}).items())
            lines.append(f"  survival risk group: {rg['risk']['group']} (Cox score {rg['risk']['score']:.2f}"
                         + (f"; {inputs})" if inputs else ")"))
    lines += [f"  time from the last image to results in the PACS: {turnaround_s:.1f} s", "",
              f"  summary image: {folder / 'summary.png'}",
              f"  all outputs:   {folder}",
              f"  PACS:          {pacs.url + '/app/explorer.html' if pacs.orthanc else pacs.url}", ""]
    return "\n".join(lines)


def run_demo(out: Path, keep: bool = False) -> int:
    """Run the demo end to end into ``out`` (see the module doc); the exit status."""
    out = out.resolve()
    shutil.rmtree(out / "node", ignore_errors=True)
    shutil.rmtree(out / "pacs", ignore_errors=True)
    base = load_config()
    pacs = LocalPacs(out / "pacs", base.node.ae_title)
    config = with_overrides(base, data_dir=out / "node", port=free_port(), metrics_port=free_port(),
                            allow=["GLIOMA_REPLAY@127.0.0.1"], destinations=[f"{pacs.ae_title}@127.0.0.1:{pacs.port}"])
    node = Node(config)
    node.start()
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()
    try:
        cohort = out / "cohort" / "dicom"
        if not cohort.exists():  # through the CLI, node's one door into training/
            subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "synth", "--cases", "1", "--seed", "7", "--out",
                            str(out / "cohort")], check=True)
        study_dir = next(p for p in sorted(cohort.iterdir()) if p.is_dir())
        print(f"replaying {study_dir} to {config.node.ae_title}@127.0.0.1:{config.node.port} ...")
        sent = replay(study_dir, f"{config.node.ae_title}@127.0.0.1:{config.node.port}")
        last_instance = time.perf_counter()
        if sent.failed:
            print(f"demo: {len(sent.failed)} instance(s) not stored by the node", file=sys.stderr)
            for path, reason in sent.failed[:5]:
                print(f"  {path}: {reason}", file=sys.stderr)
            return 1
        from glioma_node.dicom_io.scan import scan
        study_uid = next(iter(scan(study_dir).studies))
        while True:
            study = node.state.study(study_uid)
            if study and study.state == "failed":
                print(f"demo: the study failed: {study.reason}", file=sys.stderr)
                return 1
            if study and study.state == "done":
                findings_path = node.paths.results(study_uid, study.version) / "findings.json"
                if pacs.result_count(study_uid) >= len(json.loads(findings_path.read_text())["dicom"]):
                    break
            if time.perf_counter() - last_instance > 1800:
                print("demo: no results after 30 minutes", file=sys.stderr)
                return 1
            time.sleep(0.5)
        turnaround = time.perf_counter() - last_instance
        folder = node.paths.results(study_uid, study.version)
        print(_report(json.loads((folder / "findings.json").read_text()), turnaround, folder, pacs))
        if keep:
            print("node and PACS keep running; Ctrl-C stops them")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        node.stop()
        pacs.stop()


def main() -> int:
    """``make demo``: the demo's command line."""
    parser = argparse.ArgumentParser(prog="python -m glioma_node.cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--keep", action="store_true", help="keep the node and the PACS running afterwards")
    args = parser.parse_args()
    import os

    from glioma_node.service.logs import configure
    os.environ.setdefault("GLIOMA_NODE_LOG_LEVEL", "WARNING")  # the report, not the log, is the demo's output
    configure()
    return run_demo(args.out, args.keep)


if __name__ == "__main__":
    sys.exit(main())
