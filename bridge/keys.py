"""Every Redis key the bridge uses is built here, under the configured prefix."""

from __future__ import annotations

import hashlib


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def absorb_token(prefix: str, base_url: str, username: str) -> str:
    """The shared Absorb token of one admin user on one tenant (hashed: no names in key space)."""
    return f"{prefix}:absorb-token:{_digest(base_url, username)}"


def absorb_token_lock(prefix: str, base_url: str, username: str) -> str:
    """The lock held by the one worker that is logging in for everyone."""
    return absorb_token(prefix, base_url, username) + ":lock"


def absorb_login_backoff(prefix: str, base_url: str, username: str) -> str:
    """Refusals of the credentials in a row and when the next login may go."""
    return absorb_token(prefix, base_url, username) + ":backoff"


def absorb_logins(prefix: str, base_url: str, username: str) -> str:
    """When each login of the last minute went, so every replica together keeps to a few."""
    return absorb_token(prefix, base_url, username) + ":logins"


def absorb_budget(prefix: str, base_url: str) -> str:
    """The tenant's request budget (a GCRA time), shared by every replica and command."""
    return f"{prefix}:absorb-budget:{_digest(base_url)}"


def marker(prefix: str) -> str:
    """A random value written once into a Redis data set: gone or changed, the data was lost."""
    return f"{prefix}:marker"


def outbox(prefix: str) -> str:
    """The stream every event is appended to before any sink sees it."""
    return f"{prefix}:outbox"


def scope_state(prefix: str, feed: str, scope: str) -> str:
    """A hash with a scope's watermark, bucket count and sweep bookkeeping."""
    return f"{prefix}:scope:{feed}:{scope}"


def scopes(prefix: str, feed: str) -> str:
    """The set of scope names a feed has swept."""
    return f"{prefix}:scopes:{feed}"


def snapshot_bucket(
    prefix: str, feed: str, scope: str, bucket: int, *, details: bool = False
) -> str:
    """One of the hashes holding a scope's snapshots (drill-down records apart)."""
    return f"{snapshot_buckets(prefix, feed, scope, details=details)}{bucket}"


def snapshot_buckets(prefix: str, feed: str, scope: str, *, details: bool = False) -> str:
    """What the names of a scope's snapshot buckets start with: the bucket number follows."""
    return f"{prefix}:snap:{feed}:{scope}:{'d' if details else ''}"


def lease(prefix: str, feed: str, scope: str) -> str:
    """Held by the one replica sweeping the scope."""
    return f"{prefix}:lease:{feed}:{scope}"


def fence(prefix: str, feed: str, scope: str) -> str:
    """A counter that makes every lease token of a scope unique and ordered."""
    return f"{prefix}:fence:{feed}:{scope}"


def quarantine(prefix: str, feed: str) -> str:
    """Records Absorb sent that could not be read, with their raw text and the error."""
    return f"{prefix}:quarantine:{feed}"


def sink_group(sink: str) -> str:
    """The outbox consumer group of one sink (a group name, not a key)."""
    return f"sink:{sink}"


def delivery_due(prefix: str, sink: str) -> str:
    """A sink's queue: the next event of each subject, scored by when to try it."""
    return f"{prefix}:dq:{sink}:due"


def delivery_entries(prefix: str, sink: str) -> str:
    """A sink's queued events (payload, tries so far, last error), by outbox entry id."""
    return f"{prefix}:dq:{sink}:entries"


def delivery_retrying(prefix: str, sink: str) -> str:
    """A set of the ids of a sink's queued events that failed at least once."""
    return f"{prefix}:dq:{sink}:retrying"


def delivery_blocked(prefix: str, sink: str) -> str:
    """Per subject, the event of a sink's queue that later events of the subject wait behind."""
    return f"{prefix}:dq:{sink}:blocked"


def delivery_held_prefix(prefix: str, sink: str) -> str:
    """Lists of events waiting behind their subject's head (one list a subject)."""
    return f"{prefix}:dq:{sink}:held:"


def dead_letters(prefix: str, sink: str) -> str:
    """The stream of a sink's events that ran out of tries."""
    return f"{prefix}:dlq:{sink}"


def sink_disabled(prefix: str, sink: str) -> str:
    """Set (with the reason) when a sink told the bridge to stop (HTTP 410)."""
    return f"{prefix}:disabled:{sink}"


def sink_feeder(prefix: str, sink: str) -> str:
    """A hash naming the one replica that feeds a sink's queue (holder, until ms, fence)."""
    return f"{prefix}:dq:{sink}:feeder"


def sinks_seen(prefix: str) -> str:
    """A hash: per sink consumer group, when a replica last fed it (ms); stale groups go."""
    return f"{prefix}:sinks-seen"


def quarantine_order(prefix: str, feed: str) -> str:
    """A sorted set of a feed's quarantine keys by when they were quarantined (ms)."""
    return f"{prefix}:quarantine-order:{feed}"


def dropped(prefix: str) -> str:
    """A hash counting what the caps dropped: `dead_letters:<sink>`, `quarantine:<feed>`,
    `sink_groups`."""
    return f"{prefix}:dropped"


def hints(prefix: str, feed: str) -> str:
    """A sorted set of a feed's scopes a notice asked to sweep now, scored by the notice's time."""
    return f"{prefix}:hints:{feed}"


def replica(prefix: str, replica_id: str) -> str:
    """A running replica's loop health (JSON), written by its stats loop with a TTL."""
    return f"{prefix}:replica:{replica_id}"


def replicas(prefix: str) -> str:
    """A sorted set of replica ids by when each last wrote its loop health (Unix ms)."""
    return f"{prefix}:replicas"


def notice_counts(prefix: str) -> str:
    """A hash counting Absorb's notices by outcome (`refused:<reason>` for refusals)."""
    return f"{prefix}:notices"
