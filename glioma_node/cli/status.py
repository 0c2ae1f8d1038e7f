"""`glioma-node status`: the studies and jobs of a node's data directory, as a table.

Every value that came from a peer (UIDs, reasons quoting descriptions) is printed with
control characters escaped, so a crafted value cannot drive the terminal.
"""
from __future__ import annotations

import time

from glioma_node.core.text import printable
from glioma_node.service.state import JobState, NodeState


def _age(t: float | None) -> str:
    if not t:
        return "-"
    seconds = time.time() - t
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def render(state: NodeState) -> str:
    """Studies (state, version, instances, last instance, reason) and the open job queue."""
    lines = [f"{'study':66s} {'state':10s} {'ver':>3s} {'inst':>5s} {'last':>5s}  reason"]
    for s in state.studies():
        lines.append(f"{printable(s.study_uid):66s} {s.state:10s} {s.version:3d} {s.instances:5d} "
                     f"{_age(s.last_at):>5s}  {printable(s.reason or '')}")
    pending = [j for j in state.jobs() if j.state in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED)]
    lines.append("")
    lines.append(f"jobs open or failed: {len(pending)}")
    for j in pending:
        due = f"  next in {max(j.next_at - time.time(), 0):.0f}s" if j.state is JobState.QUEUED else ""
        lines.append(f"  #{j.id} {j.kind:7s} {j.state:8s} v{j.version} {printable(str(j.target) if j.target else '-'):20s} "
                     f"attempts {j.attempts}{due}{'  ' + printable(j.error) if j.error else ''}")
    conflicts = state.conflicts()
    if conflicts:
        lines.append("")
        lines.append(f"instances resent with other content (the first copy kept): {len(conflicts)}")
        for sop, study, stored, received, peer in conflicts:
            lines.append(f"  {printable(sop)} of study {printable(study)} from {printable(peer or '-')}: "
                         f"kept sha256 {stored[:16]}, received sha256 {received[:16]}")
    return "\n".join(lines)
