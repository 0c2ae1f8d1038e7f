"""`glioma-node status`: the studies and jobs of a node's data directory, as a table.

Every value that came from a peer (UIDs, reasons quoting descriptions) is printed with
control characters escaped, so a crafted value cannot drive the terminal.
"""
from __future__ import annotations

import re
import time

from glioma_node.service.state import JobState, NodeState


def _age(t: float | None) -> str:
    if not t:
        return "-"
    seconds = time.time() - t
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` with control characters (ESC, CR, BEL, C1 controls...) shown as \\xNN."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


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
    return "\n".join(lines)
