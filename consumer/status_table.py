"""The status report as a table for a terminal (status.py collects it)."""

from __future__ import annotations

import math

from consumer.status import GroupStatus, Status, Thresholds, duration


def render(status: Status, limits: Thresholds) -> str:
    """A table for a terminal: shards and groups, consumers, then the totals and the verdict."""
    lines = [
        f"{'stream':<28} {'length':>9} {'group':<14} {'undelivered':>11} {'pending':>8} {'backlog':>8} "
        f"{'trim point':>16} {'trimmable':>9}  owner"
    ]
    for s in status.shards:
        for g in s.groups or [GroupStatus("-", "-", 0, 0)]:
            lines.append(
                f"{s.stream:<28} {s.length:>9} {g.name:<14} {g.undelivered:>11} {g.pending:>8} "
                f"{g.backlog:>8} {s.trim_point or '-':>16} {s.trimmable:>9}  {s.owner or '-'}"
            )
    if status.consumers:
        lines += [
            "",
            f"{'consumer':<28} {'group':<14} {'pending':>8} {'oldest pending':>14} "
            f"{'deliveries':>10} {'starts':>6} {'idle':>9}",
        ]
        for c in status.consumers:
            idle = "-" if c.idle_ms is None else duration(c.idle_ms)
            flag = "  idle" if c.idle_ms is not None and c.idle_ms >= limits.idle_ms else ""
            oldest = duration(c.oldest_pending_age_ms) if c.pending else "-"
            lines.append(
                f"{c.name:<28} {c.group:<14} {c.pending:>8} {oldest:>14} {c.max_deliveries:>10} "
                f"{c.starts:>6} {idle:>9}{flag}"
            )
    coverage = status.fingerprint_coverage
    feeds = (
        f"{status.feeds} feeds in Postgres ({coverage:.0%} covered)"
        if coverage is not None
        else f"feeds in Postgres unknown: {status.database_error}"
        if status.database_error
        else "no feeds in Postgres yet"
    )
    age = status.last_commit_age_ms
    lines += [
        "",
        f"backlog {status.backlog}, dead letters {status.dead_letters}",
        f"fingerprints in Redis {status.fingerprints}, {feeds}",
        "last commit " + ("never" if age is None else f"{duration(age)} ago"),
        memory_line(status),
    ]
    if status.id_use_pct:
        lines.append(
            "id sequences used: " + ", ".join(f"{k} {v:.4g}%" for k, v in sorted(status.id_use_pct.items()))
        )
    if status.counters:
        lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(status.counters.items())))
    problems = status.problems(limits)
    lines += ["", "UNHEALTHY: " + "; ".join(problems) if problems else "healthy"]
    return "\n".join(lines)


def memory_line(status: Status) -> str:
    memory = status.memory
    if memory is None:
        return "redis memory unknown"
    used = f"redis memory {_mb(memory.used_bytes)}"
    share = memory.share
    if share is None:
        used += " of no maxmemory limit"
    else:
        used += f" of {_mb(memory.max_bytes)} ({share:.0%})"
    used += f", policy {memory.policy}, streams {_mb(status.stream_bytes)}"
    full_in, growth = status.memory_full_in_s, status.memory_growth_bytes_per_s
    if growth is None:
        return used + ", growth unknown (no consumer sampled it in the last minute)"
    if full_in is None or math.isinf(full_in):
        return used + f", not filling up ({_mb(round(growth))}/s)"
    return used + f", full in {duration(round(full_in * 1000))} at {_mb(round(growth))}/s"


def _mb(size: int) -> str:
    return f"{size / 1_048_576:,.1f} MB"
