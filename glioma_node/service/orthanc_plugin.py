"""glioma-node inside Orthanc (the orthanc-python plugin): STABLE_STUDY in, results back.

:func:`register` is called by the plugin script that ``glioma-node orthanc-config``
writes. It starts the same :class:`glioma_node.service.serve.Node` the standalone node runs, without a
DICOM listener: Orthanc receives. Orthanc's callbacks only put the study on a queue
(they must not block Orthanc); the node's own thread reads the study's MR instances
through Orthanc's API into the spool, and from there everything is as in standalone
mode: durable spool and SQLite state, assembly, the worker process, at-least-once jobs.
The results are stored back into Orthanc (``dispatch.orthanc_self``) and optionally sent
on to the configured destinations. Each study carries its state in the Orthanc metadata
``GliomaNodeStatus``; ``GET /glioma-node/status`` lists all of them.

At start every study already in Orthanc is looked at again, so a STABLE_STUDY that fired
while the plugin was down is not lost.

The orthanc-python plugin is AGPL-3.0; see docs/deploy.md for what that means for a
modified plugin script.
"""
from __future__ import annotations

import json
import logging
import queue
import threading

import orthanc  # provided by the orthanc-python plugin

from glioma_node.service.config import load_config
from glioma_node.service.intake import MR_CLASSES, Intake, Outcome
from glioma_node.service.logs import configure
from glioma_node.service.serve import Node

log = logging.getLogger(__name__)

STATUS_METADATA = "GliomaNodeStatus"


class OrthancBridge:
    """What connects Orthanc to the node: the stable-study queue, ingest, store-back, status."""

    def __init__(self) -> None:
        self.stable: queue.Queue[str] = queue.Queue()
        self.node: Node | None = None
        self.intake: Intake | None = None
        self.reported: dict[str, str] = {}
        self.rescan = False

    # Orthanc callbacks: never block ------------------------------------------
    def on_change(self, change_type: int, level: int, resource: str) -> None:
        """Orthanc's change callback: queue stable studies, rescan at start, stop with Orthanc (never blocks)."""
        if change_type == orthanc.ChangeType.STABLE_STUDY:
            self.stable.put(resource)
        elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
            self.rescan = True  # the node's thread looks at every stored study once
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED and self.node is not None:
            self.node.stop()

    def on_status(self, output, uri: str, **request) -> None:
        """``GET /glioma-node/status``: every study's state as JSON."""
        studies = [{"study_instance_uid": s.study_uid, "state": s.state, "reason": s.reason, "version": s.version,
                    "instances": s.instances} for s in self.node.state.studies()] if self.node else []
        output.AnswerBuffer(json.dumps({"studies": studies}, indent=1), "application/json")

    # the node's thread ---------------------------------------------------------
    def ingest(self, study_id: str) -> int:
        """Copy the MR instances of one Orthanc study into the spool through the node's
        intake (the checks of the standalone node); how many were new."""
        if self.intake is None:
            raise RuntimeError("the plugin's intake is not set up (register() was not called)")
        added = 0
        for instance in json.loads(orthanc.RestApiGet(f"/studies/{study_id}/instances")):
            sop_class = orthanc.RestApiGet(f"/instances/{instance['ID']}/metadata/SopClassUid").decode()
            if sop_class not in MR_CLASSES:
                continue
            answer = self.intake.admit(orthanc.RestApiGet(f"/instances/{instance['ID']}/file"), sop_class,
                                        peer=f"orthanc:{instance['ID']}")
            added += answer.outcome is Outcome.RECEIVED
        return added

    def store_back(self, data: bytes) -> None:
        """Store one result file (Part 10 bytes) into this Orthanc."""
        orthanc.RestApiPost("/instances", data)

    def _report(self) -> None:
        """Put each study's state into Orthanc's metadata when it changes."""
        if self.node is None:
            return
        for study in self.node.state.studies():
            text = f"{study.state} v{study.version}" + (f": {study.reason}" if study.reason else "")
            if self.reported.get(study.study_uid) == text:
                continue
            found = json.loads(orthanc.RestApiPost("/tools/lookup", study.study_uid.encode()))
            for item in (f for f in found if f.get("Type") == "Study"):
                orthanc.RestApiPut(f"/studies/{item['ID']}/metadata/{STATUS_METADATA}", text.encode())
            self.reported[study.study_uid] = text

    def on_tick(self) -> None:
        """Once a second in the node's thread: ingest stable studies, then report states to Orthanc."""
        if self.rescan:  # whatever became stable while the plugin was down
            self.rescan = False
            for study_id in json.loads(orthanc.RestApiGet("/studies")):
                self.stable.put(study_id)
        while True:
            try:
                study_id = self.stable.get_nowait()
            except queue.Empty:
                break
            try:
                added = self.ingest(study_id)
                if added:
                    log.info("ingested from Orthanc", extra={"orthanc_study": study_id, "instances": added})
            except Exception:  # a study Orthanc deleted meanwhile, a broken file: logged, Orthanc goes on
                log.exception("ingest failed", extra={"orthanc_study": study_id})
        try:
            self._report()
        except Exception:
            log.exception("status report to Orthanc failed")


_bridge = OrthancBridge()


def register() -> None:
    """Start the node inside Orthanc; the ``GliomaNode`` section of Orthanc's
    configuration names the node configuration file (``Config``)."""
    configure()
    settings = json.loads(orthanc.GetConfiguration()).get("GliomaNode", {})
    config = load_config(settings.get("Config"))
    node = Node(config, listen=False, local=_bridge.store_back, on_tick=_bridge.on_tick)
    _bridge.node = node
    _bridge.intake = Intake(node.spool, node.state, limits=config.node.read_limits())
    node.start()
    orthanc.RegisterOnChangeCallback(_bridge.on_change)  # Orthanc's database is not ours to read before it starts
    orthanc.RegisterRestCallback("/glioma-node/status", _bridge.on_status)
    threading.Thread(target=node.run, name="glioma-node", daemon=True).start()
    log.info("glioma-node plugin started", extra={"data_dir": str(config.data_dir)})
