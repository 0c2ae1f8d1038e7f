"""`glioma-node status`: the studies and jobs of a node's data directory, as a table."""
from __future__ import annotations

import time

from node.state import SqliteQueue


def _age(t: float | None) -> str:
    if not t:
        return "-"
    seconds = time.time() - t
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def render(queue: SqliteQueue) -> str:
    """Studies (state, version, instances, last instance, reason) and the open job queue."""
    lines = [f"{'study':66s} {'state':10s} {'ver':>3s} {'inst':>5s} {'last':>5s}  reason"]
    for s in queue.studies():
        lines.append(f"{s.study_uid:66s} {s.state:10s} {s.version:3d} {s.instances:5d} {_age(s.last_at):>5s}  "
                     f"{s.reason or ''}")
    pending = [j for j in queue.jobs() if j.state in ("queued", "running", "failed")]
    lines.append("")
    lines.append(f"jobs open or failed: {len(pending)}")
    for j in pending:
        due = f"  next in {max(j.next_at - time.time(), 0):.0f}s" if j.state == "queued" else ""
        lines.append(f"  #{j.id} {j.kind:7s} {j.state:8s} v{j.version} {j.target or '-':20s} attempts {j.attempts}"
                     f"{due}{'  ' + j.error if j.error else ''}")
    return "\n".join(lines)
