"""The node's durable state and its rules, without a network: job queue semantics,
series completeness, command-line overrides, JSON logs without patient identifiers."""
from __future__ import annotations

import io
import json
import logging

import pytest
from pydicom.uid import MRImageStorage

from glioma_node.service.assembly import series_complete
from glioma_node.service.config import ConfigError, with_overrides
from glioma_node.service.dispatch import backoff_s
from glioma_node.service.logs import JsonFormatter, pseudonym
from glioma_node.service.state import AssociationState, NodeState, Received, Series

MR = MRImageStorage


def instance(study: str, series: str, sop: str, expected: int | None = None) -> Received:
    return Received(study, series, sop, MR, expected, "x")


def test_jobs_run_once_per_version_and_come_back_after_a_crash(tmp_path):
    queue = NodeState(tmp_path / "state.db")
    assert queue.enqueue("process", "1.2.3", 1)
    assert not queue.enqueue("process", "1.2.3", 1)  # the same job twice is one job
    job = queue.claim(("process",))
    assert job is not None and job.attempts == 1 and queue.claim(("process",)) is None
    # a crash while running: the next start queues it again (at-least-once)
    assert NodeState(tmp_path / "state.db").recover() == 1
    again = queue.claim(("process",))
    assert again.id == job.id and again.attempts == 2
    queue.retry(again.id, "PACS down", delay_s=3600)
    assert queue.claim(("process",)) is None  # not due yet
    queue.finish(again.id)
    assert [j.state for j in queue.jobs("1.2.3")] == ["done"]


def test_instances_are_counted_once_and_studies_wake_from_waiting(tmp_path):
    queue = NodeState(tmp_path / "state.db")
    queue.association_opened("a1", "STORESCU", "127.0.0.1")
    assert queue.record_instance(instance("1.2", "1.2.1", "1.2.1.1", 2), "p", "a1")
    assert not queue.record_instance(instance("1.2", "1.2.1", "1.2.1.1", 2), "p", "a1")
    assert queue.instance_location("1.2.1.1") == ("1.2", "1.2.1") and queue.instance_location("9.9") is None
    assert queue.has_open_association("1.2")
    queue.set_state("1.2", "waiting", "missing T2")
    queue.record_instance(instance("1.2", "1.2.9", "1.2.9.1"), "q", "a1")
    study = queue.study("1.2")
    assert study.state == "received" and study.instances == 2 and study.calling_ae == "STORESCU"
    queue.association_closed("a1")
    assert not queue.has_open_association("1.2")
    assert queue.metrics()["glioma_node_instances_stored"] == 2


def test_series_complete_by_count_or_by_quiet_period_after_release():
    counted = Series("s", "t", instances=20, expected=20, last_at=100.0)
    assert series_complete(counted, open_association=True, quiet_s=5, now=100.0)
    partial = Series("s", "t", instances=12, expected=20, last_at=100.0)
    assert not series_complete(partial, open_association=True, quiet_s=5, now=200.0)
    assert not series_complete(partial, open_association=False, quiet_s=5, now=103.0)
    assert series_complete(partial, open_association=False, quiet_s=5, now=106.0)


def test_command_line_overrides_are_validated(config):
    changed = with_overrides(config, port=4242, ae_title="NODE_X", allow=["CT1@10.0.0.5"],
                             destinations=["PACS@127.0.0.1:4242"])
    assert changed.node.port == 4242 and changed.node.ae_title == "NODE_X"
    assert [(p.ae_title, p.host) for p in changed.node.allowed_peers] == [("CT1", "10.0.0.5")]
    assert (changed.destinations[0].ae_title, changed.destinations[0].port) == ("PACS", 4242)
    with pytest.raises(ConfigError, match="ae_title"):
        with_overrides(config, ae_title="A" * 17)
    with pytest.raises(ValueError, match="AET@HOST:PORT"):
        with_overrides(config, destinations=["PACS@127.0.0.1"])


def test_backoff_doubles_up_to_its_cap(config):
    delays = [backoff_s(n, config) for n in range(1, 10)]
    assert delays[:3] == [5, 10, 20] and max(delays) == config.dispatch.retry_max_s


def test_logs_are_json_without_patient_identifiers():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("glioma-test")
    logger.addHandler(handler)
    logger.warning("study failed", extra={"patient": pseudonym("PAT-12345"), "study": "1.2.3"})
    logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "study failed" and entry["study"] == "1.2.3"
    assert "PAT-12345" not in stream.getvalue() and len(entry["patient"]) == 12
    assert pseudonym("PAT-12345") == entry["patient"] and pseudonym(None) is None


def test_a_database_from_a_newer_version_is_refused_not_overwritten(tmp_path):
    import sqlite3

    NodeState(tmp_path / "state.db").enqueue("process", "1.2", 1)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer glioma-node"):
        NodeState(tmp_path / "state.db")


def test_a_new_version_needs_a_new_instance_not_a_later_clock(tmp_path):
    queue = NodeState(tmp_path / "state.db")
    for study in ("1.1", "1.2"):
        queue.record_instance(instance(study, study + ".1", study + ".1.1"), "p", "")
        # processed_at long before the last instance: a clock says "new", the count does not
        queue.set_state(study, "done", None, processed_at=1.0, processed_instances=1)
    assert queue.arrived_after_processing() == []
    queue.record_instance(instance("1.2", "1.2.1", "1.2.1.2"), "p", "")  # one more instance after the snapshot
    assert [s.study_uid for s in queue.arrived_after_processing()] == ["1.2"]


def test_after_a_crash_an_open_association_leaves_its_series_unfinished(tmp_path, config):
    from glioma_node.service.assembly import decide

    queue = NodeState(tmp_path / "state.db")
    queue.association_opened("a1", "STORESCU", "127.0.0.1")
    for n in range(17):
        queue.record_instance(instance("1.5", "1.5.1", f"1.5.1.{n}", expected=30), "p", "a1")
    NodeState(tmp_path / "state.db").recover()  # the node died with the association open
    assert queue.broken_series("1.5") == {"1.5.1"} and not queue.has_open_association("1.5")
    series = queue.series("1.5")[0]
    # long past the quiet period, the cut-off series still waits; the force timeout ends the wait
    assert not series_complete(series, open_association=False, quiet_s=5, now=series.last_at + 60, broken=True)
    study = queue.study("1.5")
    facts = (study, queue.series("1.5"), queue.has_open_association("1.5"), queue.broken_series("1.5"))
    assert decide(*facts, None, config.assembly, now=series.last_at + 60).action == "none"
    # a series whose sender released normally is complete after the quiet period, as before
    assert series_complete(series, open_association=False, quiet_s=5, now=series.last_at + 60, broken=False)


def test_incomplete_series_are_named_in_warnings():
    from glioma_node.service.assembly import incomplete_series

    warnings = incomplete_series([Series("1.5.1", "1.5", 17, 30, 0.0), Series("1.5.2", "1.5", 30, 30, 0.0),
                                  Series("1.5.3", "1.5", 4, None, 0.0)])
    assert len(warnings) == 1 and "17 of 30" in warnings[0] and "1.5.1" in warnings[0]


def test_an_aborted_association_counts_as_cut_off_a_released_one_does_not(tmp_path):
    queue = NodeState(tmp_path / "state.db")
    for name, end in (("a1", AssociationState.ABORTED), ("a2", AssociationState.RELEASED)):
        queue.association_opened(name, "STORESCU", "127.0.0.1")
        queue.record_instance(instance("1.6", f"1.6.{name[-1]}", f"1.6.{name[-1]}.1", expected=3), "p", name)
        queue.association_closed(name, end)
        queue.association_closed(name, AssociationState.ABORTED)  # the connection closing afterwards changes nothing
    assert queue.broken_series("1.6") == {"1.6.1"}


def test_a_schema_1_database_is_migrated_in_place(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript("""
        CREATE TABLE studies(study_uid TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, version INTEGER NOT NULL
            DEFAULT 0, patient TEXT, first_at REAL, last_at REAL, surveyed_at REAL, processed_at REAL,
            updated_at REAL, calling_ae TEXT);
        CREATE TABLE instances(sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
            sop_class TEXT, path TEXT NOT NULL, association TEXT, received_at REAL);
        CREATE TABLE associations(id TEXT PRIMARY KEY, calling_ae TEXT, address TEXT, opened_at REAL);
        INSERT INTO studies VALUES ('1.7', 'done', NULL, 1, NULL, 1, 2, 2, 3, 3, NULL);
        INSERT INTO instances VALUES ('1.7.1.1', '1.7', '1.7.1', 'x', 'p', '', 1);
        PRAGMA user_version=1;""")
    db.close()
    queue = NodeState(tmp_path / "state.db")
    assert queue.study("1.7").processed_instances == 1 and queue.arrived_after_processing() == []


def test_status_never_prints_a_peer_s_control_characters(tmp_path):
    from glioma_node.cli.status import render

    queue = NodeState(tmp_path / "state.db")
    crafted = "1.2.3\x1b[2J\x1b]0;owned\x07"  # clear screen, set the terminal title
    queue.record_instance(instance(crafted, "1.2.3.1", "1.2.3.1.1"), "p", "")
    queue.set_state(crafted, "failed", "description \x1b[31mred\r\x9b")
    text = render(queue)
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "\\x1b[2J" in text and "\\x9b" in text


def test_python_warnings_become_json_log_lines():
    import warnings

    from glioma_node.service.logs import configure

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure(logging.INFO, stream)
        warnings.warn("a value that breaks its VR", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.level = saved
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and lines[-1]["logger"] == "py.warnings" and "breaks its VR" in lines[-1]["message"]


def test_requestor_associations_keep_pynetdicom_s_own_loop(monkeypatch):
    """The node's queue-waiting loop is for associations it accepts; a requestor (the
    node's dispatch, a replay in the same process) must keep the stock loop, whose pause
    before each send keeps the loop off the response the sender waits for."""
    from types import SimpleNamespace

    from glioma_node.service import reactor

    stock: list = []
    monkeypatch.setattr(reactor, "_original", stock.append)
    monkeypatch.setattr(reactor, "_original_dul", stock.append)
    from pynetdicom.dimse import DIMSEServiceProvider

    requestor = SimpleNamespace(is_acceptor=False, dimse_timeout=0.5)
    requestor.dimse = DIMSEServiceProvider(requestor)
    reactor._run_reactor(requestor)
    dul = SimpleNamespace(assoc=requestor)
    reactor._dul_run_reactor(dul)
    assert stock == [requestor, dul]
    assert requestor.dimse.get_msg(block=False) == (None, None)  # and takes only requests (test_reactor.py)
