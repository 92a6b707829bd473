"""Absorb's own webhooks, taken as hints: verify a notice, find what it names, hint its scopes.

A notice never becomes an event. The listener (`listener`) answers Absorb at once
and queues the verified body; the resolver (`resolve`) finds the courses, users
and enrollments it names (`names`), looks up what a user or an enrollment alone
leaves open, and hints the scopes to sweep now (`bridge.hints`).
"""

from bridge.notices.listener import NoticeListener
from bridge.notices.names import Named, find_named
from bridge.notices.signature import sign, verify

__all__ = ["Named", "NoticeListener", "find_named", "sign", "verify"]
