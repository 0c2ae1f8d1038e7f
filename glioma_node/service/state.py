"""Durable state of the node: instances, studies, associations and jobs, in SQLite.

:class:`NodeState` is the node's one record of what it received and what it owes: one
file, WAL, safe across processes on one machine. The spool, not this database, is the
durable record of received instances; the database is reconciled with it at every start
(:func:`glioma_node.service.reconcile.reconcile`).

Study states (:class:`StudyState`): ``received`` (instances arriving), ``waiting``
(complete series but a required role missing), ``processing``, ``sending``, ``done``,
``failed`` (with a reason). Jobs (:class:`JobKind` ``process``, ``send``) run at least
once: a job a crash interrupted is queued again at the next start, and every job's output
is idempotent (same UIDs).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from glioma_node.service.target import Target

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # PRAGMA user_version; raise it with a migration in _migrate when the tables change


class StudyState(StrEnum):
    """Where a study stands (see the module doc)."""

    RECEIVED = "received"
    WAITING = "waiting"
    PROCESSING = "processing"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"


class JobKind(StrEnum):
    """What a job does: ``process`` runs the pipeline on a study version, ``send`` delivers its results to one target."""

    PROCESS = "process"
    SEND = "send"


class JobState(StrEnum):
    """Where a job stands; ``queued`` jobs run when ``next_at`` has passed."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class AssociationState(StrEnum):
    """How an association stands; INTERRUPTED: it was open when the node died."""

    OPEN = "open"
    RELEASED = "released"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies(
    study_uid TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, version INTEGER NOT NULL DEFAULT 0,
    patient TEXT, first_at REAL, last_at REAL, surveyed_at REAL, processed_at REAL, updated_at REAL,
    calling_ae TEXT, processed_instances INTEGER);
CREATE TABLE IF NOT EXISTS series(
    series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, instances INTEGER NOT NULL DEFAULT 0,
    expected INTEGER, last_at REAL);
CREATE TABLE IF NOT EXISTS instances(
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_class TEXT,
    path TEXT NOT NULL, association TEXT, received_at REAL);
CREATE TABLE IF NOT EXISTS associations(
    id TEXT PRIMARY KEY, calling_ae TEXT, address TEXT, opened_at REAL, state TEXT NOT NULL DEFAULT 'open',
    closed_at REAL, owner INTEGER);
CREATE TABLE IF NOT EXISTS conflicts(
    sop_uid TEXT NOT NULL, study_uid TEXT NOT NULL, stored_sha256 TEXT NOT NULL, received_sha256 TEXT NOT NULL,
    peer TEXT, at REAL, PRIMARY KEY(sop_uid, received_sha256));
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, study_uid TEXT NOT NULL, version INTEGER NOT NULL,
    target TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, error TEXT, started_at REAL, finished_at REAL, created_at REAL,
    UNIQUE(kind, study_uid, version, target));
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_by_association ON instances(association);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, next_at);
"""


@dataclass(frozen=True)
class Received:
    """The facts of one checked instance that the state records (see :mod:`glioma_node.service.intake`)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    expected: int | None
    patient: str | None
    tolerated: tuple[str, ...] = ()
    voxels: int = 0  # Rows x Columns x frames x samples (the intake bounds a series' sum)


@dataclass(frozen=True)
class Study:
    """One study as the state knows it; times are seconds since the epoch (``time.time()``),
    ``instances`` the instances recorded now, ``processed_instances`` those of the last
    processed snapshot."""

    study_uid: str
    state: StudyState
    reason: str | None
    version: int
    patient: str | None
    first_at: float | None
    last_at: float | None
    surveyed_at: float | None
    processed_at: float | None
    updated_at: float | None
    calling_ae: str | None = None
    processed_instances: int | None = None
    instances: int = 0


@dataclass(frozen=True)
class Series:
    """One series: instances recorded, instances its headers announce (None: unknown), last arrival (epoch s)."""

    series_uid: str
    study_uid: str
    instances: int
    expected: int | None
    last_at: float | None


@dataclass(frozen=True)
class Job:
    """One job: ``target`` is None for ``process`` jobs; ``next_at`` and ``started_at`` (of
    the current attempt) epoch seconds; ``attempts`` so far."""

    id: int
    kind: JobKind
    study_uid: str
    version: int
    target: Target | None
    state: JobState
    attempts: int
    next_at: float
    error: str | None
    started_at: float | None = None


@dataclass(frozen=True)
class SendHealth:
    """Sending now: send jobs waiting to retry after a failure, failed send attempts ever,
    age of the oldest result not yet delivered (s; 0 when none waits), the latest error."""

    failing: int
    failed_attempts: int
    oldest_unsent_s: float
    last_error: str | None


class NodeState:
    """The node's durable state (see the module doc): one SQLite file; one connection per thread."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # executescript commits on its own
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older node's database to this version's schema (an upgrade keeps the
        spool and the queue); refuse one written by a newer version."""
        db = self._db()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer glioma-node (schema {version}, this one knows "
                               f"{SCHEMA_VERSION}); upgrade glioma-node or point data_dir elsewhere")
        if version < 2:  # version 0 (before versioning) has schema 1's tables
            with self._tx() as tx:
                columns = {r[1] for r in tx.execute("PRAGMA table_info(studies)")}
                if "processed_instances" not in columns:
                    tx.execute("ALTER TABLE studies ADD COLUMN processed_instances INTEGER")
                    # a finished study of schema 1 counts as processed with what it had
                    tx.execute("UPDATE studies SET processed_instances=(SELECT COUNT(*) FROM instances i "
                               "WHERE i.study_uid=studies.study_uid) WHERE processed_at IS NOT NULL")
                columns = {r[1] for r in tx.execute("PRAGMA table_info(associations)")}
                if "state" not in columns:
                    tx.execute("ALTER TABLE associations ADD COLUMN state TEXT NOT NULL DEFAULT 'open'")
                    tx.execute("ALTER TABLE associations ADD COLUMN closed_at REAL")
        if version < 3:  # schema 3: the process that accepted an association (a receiver's death closes its own)
            with self._tx() as tx:
                if "owner" not in {r[1] for r in tx.execute("PRAGMA table_info(associations)")}:
                    tx.execute("ALTER TABLE associations ADD COLUMN owner INTEGER")
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crashed process; a power cut can lose the last
            # commits, which costs nothing: the fsynced spool is the record of what was
            # acknowledged (the node reconciles it at start) and jobs run at least once.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, tb) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _tx(self) -> _Tx:
        return self._Tx(self._db())

    # instances and associations -------------------------------------------------
    def record_instance(self, instance: Received, path: str, association: str) -> bool:
        """Note a stored instance; False when the SOP Instance UID was already known."""
        return self.record_instances([(instance, path, association)])[0]

    def record_instances(self, batch: list[tuple[Received, str, str]]) -> list[bool]:
        """Note stored instances, (facts, spool path, association id) each, in one
        transaction; per instance, False when its SOP Instance UID was already known."""
        now = time.time()
        new = []
        with self._tx() as db:
            for instance, path, association in batch:
                if db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (instance.sop_uid,)).fetchone():
                    new.append(False)
                    continue
                db.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?)",
                           (instance.sop_uid, instance.study_uid, instance.series_uid, instance.sop_class, path,
                            association, now))
                db.execute("INSERT INTO series(series_uid, study_uid, instances, expected, last_at) "
                           "VALUES (?,?,1,?,?) ON CONFLICT(series_uid) DO UPDATE SET instances=instances+1, "
                           "last_at=excluded.last_at, expected=COALESCE(excluded.expected, expected)",
                           (instance.series_uid, instance.study_uid, instance.expected, now))
                calling = db.execute("SELECT calling_ae FROM associations WHERE id=?", (association,)).fetchone()
                db.execute("INSERT INTO studies(study_uid, state, patient, first_at, last_at, updated_at, calling_ae) "
                           "VALUES (?,'received',?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET "
                           "last_at=excluded.last_at, state=CASE WHEN state='waiting' THEN 'received' ELSE state END, "
                           "calling_ae=COALESCE(calling_ae, excluded.calling_ae)",
                           (instance.study_uid, instance.patient, now, now, now, calling[0] if calling else None))
                new.append(True)
        return new

    def series_instances(self, series_uid: str) -> int:
        """Instances recorded in one series (0 when unknown)."""
        row = self._db().execute("SELECT instances FROM series WHERE series_uid=?", (series_uid,)).fetchone()
        return int(row[0]) if row else 0

    def instance_location(self, sop_uid: str) -> tuple[str, str] | None:
        """(study, series) an already recorded SOP Instance UID belongs to, or None."""
        row = self._db().execute("SELECT study_uid, series_uid FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
        return (row[0], row[1]) if row else None

    def association_opened(self, association: str, calling_ae: str, address: str) -> None:
        """Note an association the SCP accepted (its instances point at it), owned by this process."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO associations(id, calling_ae, address, opened_at, state, owner) "
                       "VALUES (?,?,?,?,'open',?)", (association, calling_ae, address, time.time(), os.getpid()))

    def open_calling_aes(self) -> list[str]:
        """The calling AE titles of the associations open now (before :meth:`recover` interrupts them)."""
        return [r[0] for r in self._db().execute("SELECT calling_ae FROM associations WHERE state='open'")]

    def interrupt_associations(self, owner: int) -> list[str]:
        """The process ``owner`` (a receiver) died: its open associations are interrupted
        (their series count as cut off, see :mod:`glioma_node.service.assembly`); their calling AE titles."""
        now = time.time()
        with self._tx() as db:
            calling = [r[0] for r in db.execute("SELECT calling_ae FROM associations WHERE state='open' AND owner=?",
                                                (owner,))]
            db.execute("UPDATE associations SET state='interrupted', closed_at=? WHERE state='open' AND owner=?",
                       (now, owner))
        return calling

    def recovered_association(self, calling_aes: list[str]) -> str:
        """An interrupted association that instances found in the spool but not in the
        database are recorded under (see :func:`glioma_node.service.reconcile.reconcile`).

        Such an instance was acknowledged on an association still open when its process
        died: the association's own flush records every instance before its end is noted.
        Recorded under an interrupted association, its series counts as cut off, as the
        series of the lost association would; ``calling_aes`` are the AE titles of the
        associations the death interrupted: with one, results can still return to it."""
        association = f"recovered-{uuid.uuid4().hex}"
        calling = calling_aes[0] if len(set(calling_aes)) == 1 else None
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT INTO associations(id, calling_ae, address, opened_at, state, closed_at, owner) "
                       "VALUES (?,?,'',?,'interrupted',?,?)", (association, calling, now, now, os.getpid()))
        return association

    def record_conflict(self, sop_uid: str, study_uid: str, stored_sha256: str, received_sha256: str,
                        peer: str) -> None:
        """A second copy of a stored SOP Instance UID arrived with other content (it was dropped)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO conflicts VALUES (?,?,?,?,?,?)",
                       (sop_uid, study_uid, stored_sha256, received_sha256, peer, time.time()))

    def conflicts(self, study_uid: str | None = None) -> list[tuple[str, str, str, str, str | None]]:
        """Conflicting resends (sop, study, stored sha256, received sha256, peer), of one study or all."""
        query = "SELECT sop_uid, study_uid, stored_sha256, received_sha256, peer FROM conflicts"
        args: tuple = ()
        if study_uid is not None:
            query, args = query + " WHERE study_uid=?", (study_uid,)
        return [(r[0], r[1], r[2], r[3], r[4]) for r in self._db().execute(query + " ORDER BY at", args)]

    def association_closed(self, association: str,
                           state: AssociationState = AssociationState.RELEASED) -> None:
        """An association ended: RELEASED (A-RELEASE) or ABORTED (A-ABORT, lost
        connection, network timeout); only the first report counts."""
        if state not in (AssociationState.RELEASED, AssociationState.ABORTED):
            raise ValueError(f"an association ends released or aborted, not {state!r}")
        with self._tx() as db:
            db.execute("UPDATE associations SET state=?, closed_at=? WHERE id=? AND state='open'",
                       (AssociationState(state).value, time.time(), association))

    def has_open_association(self, study_uid: str) -> bool:
        """Whether an association that sent instances of the study is still open."""
        row = self._db().execute(
            "SELECT 1 FROM associations a WHERE a.state='open' AND EXISTS (SELECT 1 FROM instances i "
            "WHERE i.association=a.id AND i.study_uid=?) LIMIT 1", (study_uid,)).fetchone()
        return row is not None

    def broken_series(self, study_uid: str) -> set[str]:
        """Series of the study with instances from an association that did not end with
        a release (aborted, or open when the node died): the sender may not be done."""
        rows = self._db().execute(
            "SELECT DISTINCT i.series_uid FROM instances i JOIN associations a ON a.id=i.association "
            "WHERE i.study_uid=? AND a.state IN ('aborted','interrupted')", (study_uid,))
        return {r[0] for r in rows}

    def known_paths(self) -> set[str]:
        """Spool paths of every recorded instance."""
        return {r[0] for r in self._db().execute("SELECT path FROM instances")}

    # studies ---------------------------------------------------------------------
    _STUDY = "SELECT s.*, (SELECT COUNT(*) FROM instances i WHERE i.study_uid=s.study_uid) FROM studies s"

    def _study(self, row: tuple) -> Study:
        return Study(row[0], StudyState(row[1]), *row[2:])

    def studies(self, states: tuple[StudyState, ...] | None = None) -> list[Study]:
        """The studies in ``states`` (all when None), oldest first."""
        query = self._STUDY
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
        return [self._study(r) for r in self._db().execute(query + " ORDER BY first_at", states or ())]

    def arrived_after_processing(self) -> list[Study]:
        """Done or failed studies holding more instances than the snapshot last processed
        (counts, never clocks: instances are only ever added; found in SQL because the
        assembly asks every second and the list of finished studies only grows)."""
        rows = self._db().execute(self._STUDY + " WHERE state IN ('done','failed') AND processed_instances IS NOT NULL "
                                  "AND (SELECT COUNT(*) FROM instances i WHERE i.study_uid=s.study_uid) "
                                  "> processed_instances ORDER BY first_at")
        return [self._study(r) for r in rows]

    def study(self, study_uid: str) -> Study | None:
        """One study, or None when unknown."""
        row = self._db().execute(self._STUDY + " WHERE study_uid=?", (study_uid,)).fetchone()
        return self._study(row) if row else None

    def series(self, study_uid: str) -> list[Series]:
        """The series of one study."""
        rows = self._db().execute("SELECT series_uid, study_uid, instances, expected, last_at FROM series "
                                  "WHERE study_uid=?", (study_uid,))
        return [Series(*r) for r in rows]

    def set_state(self, study_uid: str, state: StudyState, reason: str | None = None, **fields: float | int) -> None:
        """Move a study to ``state`` with ``reason``; ``fields`` may set version, surveyed_at,
        processed_at (epoch s) and processed_instances."""
        with self._tx() as db:
            self._set_state(db, study_uid, state, reason, **fields)

    _STUDY_FIELDS = frozenset({"version", "surveyed_at", "processed_at", "processed_instances"})

    def _set_state(self, db: sqlite3.Connection, study_uid: str, state: StudyState, reason: str | None,
                   **fields: float | int) -> None:
        extra = {k: v for k, v in fields.items() if k in self._STUDY_FIELDS}
        sets = ", ".join([f"{k}=?" for k in extra])
        db.execute(f"UPDATE studies SET state=?, reason=?, updated_at=?{', ' + sets if sets else ''} "
                   "WHERE study_uid=?", (StudyState(state).value, reason, time.time(), *extra.values(), study_uid))

    # a study and its job, moved together --------------------------------------------
    # Each method below is one transaction: a crash between the study's change and the
    # job's (a study PROCESSING without a job, SENDING with its sends done) cannot happen;
    # recover() repairs such a pair left by an older version.
    def start_processing(self, study_uid: str, version: int, reason: str, now: float,
                         processed_instances: int) -> None:
        """The study goes PROCESSING as ``version`` and its process job is queued."""
        with self._tx() as db:
            self._set_state(db, study_uid, StudyState.PROCESSING, reason, version=version, surveyed_at=now,
                            processed_at=now, processed_instances=processed_instances)
            self._enqueue(db, JobKind.PROCESS, study_uid, version, None)

    def fail_job(self, job_id: int, study_uid: str, reason: str, **fields: float | int) -> None:
        """A job failed for good, and so did its study (with the same reason)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='failed', error=?, finished_at=? WHERE id=?",
                       (reason, time.time(), job_id))
            self._set_state(db, study_uid, StudyState.FAILED, reason, **fields)

    def complete_processing(self, job_id: int, study_uid: str, version: int, targets: list[Target],
                            **fields: float | int) -> None:
        """A process job succeeded: one send job per target queued, the study SENDING
        (DONE when there is nowhere to send), the job done."""
        with self._tx() as db:
            for target in targets:
                self._enqueue(db, JobKind.SEND, study_uid, version, target)
            self._set_state(db, study_uid, StudyState.SENDING if targets else StudyState.DONE, None, **fields)
            db.execute("UPDATE jobs SET state='done', error=NULL, finished_at=? WHERE id=?", (time.time(), job_id))

    def complete_send(self, job_id: int, study_uid: str) -> bool:
        """A send job succeeded; the study is DONE when it was SENDING and nothing of it is
        queued or running any more. True when the study became DONE."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='done', error=NULL, finished_at=? WHERE id=?", (time.time(), job_id))
            return self._done_if_sent(db, study_uid)

    def _done_if_sent(self, db: sqlite3.Connection, study_uid: str) -> bool:
        cursor = db.execute("UPDATE studies SET state='done', reason=NULL, updated_at=? WHERE study_uid=? AND "
                            "state='sending' AND NOT EXISTS (SELECT 1 FROM jobs WHERE study_uid=? AND "
                            "state IN ('queued','running'))", (time.time(), study_uid, study_uid))
        return cursor.rowcount == 1

    # jobs ------------------------------------------------------------------------
    def enqueue(self, kind: JobKind, study_uid: str, version: int, target: Target | None = None) -> bool:
        """Queue a job once (a second enqueue of the same job is a no-op); True if new."""
        with self._tx() as db:
            return self._enqueue(db, kind, study_uid, version, target)

    def _enqueue(self, db: sqlite3.Connection, kind: JobKind, study_uid: str, version: int,
                 target: Target | None) -> bool:
        now = time.time()
        cursor = db.execute("INSERT OR IGNORE INTO jobs(kind, study_uid, version, target, state, next_at, "
                            "created_at) VALUES (?,?,?,?,'queued',?,?)",
                            (JobKind(kind).value, study_uid, version, str(target) if target else "", now, now))
        return cursor.rowcount == 1

    def claim(self, kinds: tuple[JobKind, ...]) -> Job | None:
        """Take the oldest due job of ``kinds`` (marked running, attempts + 1), or None."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(f"SELECT id FROM jobs WHERE state='queued' AND next_at<=? AND kind IN "
                             f"({','.join('?' * len(kinds))}) ORDER BY next_at, id LIMIT 1", (now, *kinds)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='running', attempts=attempts+1, started_at=? WHERE id=?", (now, row[0]))
            return self._job(db.execute(self._JOB + " WHERE id=?", (row[0],)).fetchone())

    _JOB = "SELECT id, kind, study_uid, version, target, state, attempts, next_at, error, started_at FROM jobs"

    def _job(self, row: tuple) -> Job:
        return Job(row[0], JobKind(row[1]), row[2], row[3], Target.parse(row[4]) if row[4] else None,
                   JobState(row[5]), *row[6:])

    def running(self, kind: JobKind) -> list[Job]:
        """Jobs of ``kind`` now running, oldest attempt first."""
        return [self._job(r) for r in self._db().execute(self._JOB + " WHERE state='running' AND kind=? "
                                                         "ORDER BY started_at, id", (JobKind(kind).value,))]

    def restart(self, job_id: int, count_attempt: bool) -> None:
        """A running job handed out again (its worker died, or its task was lost): a new
        start time, and one more attempt when ``count_attempt``."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET started_at=?, attempts=attempts+? WHERE id=? AND state='running'",
                       (time.time(), int(count_attempt), job_id))

    def unclaim(self, job_id: int, error: str, delay_s: float) -> None:
        """A claimed job that never started (the broker refused it): queued again after
        ``delay_s`` seconds, the claim not counted as an attempt."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), error=?, next_at=? WHERE id=?",
                       (error, time.time() + delay_s, job_id))

    def requeue_running(self, kind: JobKind) -> int:
        """Jobs of ``kind`` left running by a worker that ended: queued again now; how many."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state='queued', next_at=? WHERE state='running' AND kind=?",
                              (time.time(), JobKind(kind).value)).rowcount

    def finish(self, job_id: int) -> None:
        """A job succeeded."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='done', error=NULL, finished_at=? WHERE id=?", (time.time(), job_id))

    def retry(self, job_id: int, error: str, delay_s: float) -> None:
        """A job failed and runs again after ``delay_s`` seconds."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='queued', error=?, next_at=? WHERE id=?",
                       (error, time.time() + delay_s, job_id))

    def fail(self, job_id: int, error: str) -> None:
        """A job failed for good."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='failed', error=?, finished_at=? WHERE id=?", (error, time.time(), job_id))

    def jobs(self, study_uid: str | None = None) -> list[Job]:
        """All jobs (of one study), oldest first."""
        if study_uid is None:
            return [self._job(r) for r in self._db().execute(self._JOB + " ORDER BY id")]
        return [self._job(r) for r in self._db().execute(self._JOB + " WHERE study_uid=? ORDER BY id", (study_uid,))]

    def pending(self, study_uid: str, kind: JobKind) -> int:
        """Jobs of ``kind`` for the study still queued or running."""
        row = self._db().execute("SELECT COUNT(*) FROM jobs WHERE study_uid=? AND kind=? AND state IN "
                                 "('queued','running')", (study_uid, kind)).fetchone()
        return int(row[0])

    def recover(self) -> int:
        """After a restart: jobs a crash interrupted run again; associations that were open
        are interrupted (their series count as unfinished, see :mod:`glioma_node.service.assembly`);
        a study whose state disagrees with its jobs is mended (PROCESSING without a job gets
        its job, with a failed job it fails, with a done job it goes on to SENDING or DONE;
        SENDING with a failed send fails, with every send done it is DONE)."""
        now = time.time()
        with self._tx() as db:
            count = db.execute("UPDATE jobs SET state='queued', next_at=? WHERE state='running'", (now,)).rowcount
            db.execute("UPDATE associations SET state='interrupted', closed_at=? WHERE state='open'", (now,))
            # an ended association matters only while its study is assembled
            db.execute("DELETE FROM associations WHERE state!='open' AND closed_at < ?", (now - 30 * 86400,))
            self._repair(db)
        return count

    def _repair(self, db: sqlite3.Connection) -> None:
        """Mend a study whose state disagrees with its jobs (left by a crash between two
        transactions of an older version, or by hand): see :meth:`recover`."""
        # PROCESSING: its version's process job must be queued or running
        for study_uid, version in db.execute("SELECT study_uid, version FROM studies WHERE state='processing'")\
                .fetchall():
            job = db.execute("SELECT id, state, error FROM jobs WHERE kind='process' AND study_uid=? AND version=?",
                             (study_uid, version)).fetchone()
            if job is None:
                self._enqueue(db, JobKind.PROCESS, study_uid, version, None)
                log.warning("repaired: a processing study had no job; queued", extra={"study": study_uid})
            elif job[1] == JobState.FAILED:
                self._set_state(db, study_uid, StudyState.FAILED, job[2] or "processing failed")
                log.warning("repaired: a processing study whose job failed is failed", extra={"study": study_uid})
            elif job[1] == JobState.DONE:
                sends = db.execute("SELECT COUNT(*) FROM jobs WHERE kind='send' AND study_uid=? AND version=?",
                                   (study_uid, version)).fetchone()[0]
                self._set_state(db, study_uid, StudyState.SENDING if sends else StudyState.DONE, None)
                self._done_if_sent(db, study_uid)
                log.warning("repaired: a processing study whose job was done", extra={"study": study_uid})
        # SENDING: a failed send fails it; no send left to run makes it DONE
        for study_uid, version in db.execute("SELECT study_uid, version FROM studies WHERE state='sending'")\
                .fetchall():
            failed = db.execute("SELECT error FROM jobs WHERE kind='send' AND study_uid=? AND version=? AND "
                                "state='failed'", (study_uid, version)).fetchone()
            if failed is not None:
                self._set_state(db, study_uid, StudyState.FAILED, failed[0] or "sending failed")
            elif self._done_if_sent(db, study_uid):
                log.warning("repaired: a sending study with every send done is done", extra={"study": study_uid})

    def metrics(self) -> dict[str, float]:
        """Counts for /metrics: studies by state, queue depth by kind, job durations."""
        db = self._db()
        out: dict[str, float] = {}
        for state, n in db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state"):
            out[f'glioma_node_studies{{state="{state}"}}'] = n
        for kind, n in db.execute("SELECT kind, COUNT(*) FROM jobs WHERE state IN ('queued','running') GROUP BY kind"):
            out[f'glioma_node_queue_depth{{kind="{kind}"}}'] = n
        for kind, n in db.execute("SELECT kind, COUNT(*) FROM jobs WHERE state='failed' GROUP BY kind"):
            out[f'glioma_node_jobs_failed_total{{kind="{kind}"}}'] = n
        for kind, n, total in db.execute("SELECT kind, COUNT(*), SUM(finished_at-started_at) FROM jobs "
                                         "WHERE state='done' GROUP BY kind"):
            out[f'glioma_node_stage_seconds_count{{stage="{kind}"}}'] = n
            out[f'glioma_node_stage_seconds_sum{{stage="{kind}"}}'] = round(total or 0.0, 3)
        out["glioma_node_instances_stored"] = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        sends = self.send_health()
        out["glioma_node_sends_failing"] = sends.failing
        out["glioma_node_send_failures_total"] = sends.failed_attempts
        out["glioma_node_oldest_unsent_result_seconds"] = round(sends.oldest_unsent_s, 3)
        out["glioma_node_conflicting_instances_total"] = db.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
        return out

    def send_health(self) -> SendHealth:
        """How sending goes now (for /health and /metrics)."""
        # failed attempts: every attempt of a job, less the one that succeeded or is running now
        failing, failed_attempts, oldest = self._db().execute(
            "SELECT COALESCE(SUM(state='queued' AND error IS NOT NULL), 0), "
            "COALESCE(SUM(MAX(attempts - (state IN ('done','running')), 0)), 0), "
            "MIN(CASE WHEN state IN ('queued','running') THEN created_at END) FROM jobs WHERE kind='send'").fetchone()
        last = self._db().execute("SELECT error FROM jobs WHERE kind='send' AND state='queued' AND error IS NOT NULL "
                                  "ORDER BY next_at DESC LIMIT 1").fetchone() if failing else None
        return SendHealth(int(failing), int(failed_attempts), max(0.0, time.time() - oldest) if oldest else 0.0,
                          last[0] if last else None)
