"""The `/_sim/` control API: read and set the simulator's state, faults and clock from tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bridge.absorb.timefmt import format_datetime, parse_datetime
from bridge.simulator.records import DRILL_DOWN_FAULTS, CourseEnrollmentRec, RawJson
from bridge.simulator.server import Simulator, dumps, json_response
from bridge.simulator.tenant import Record, SimError

_SETTABLE_FIELDS = {"status", "progress", "score", "dateEdited", "dateCompleted", "isActive"}


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register the control API under `/_sim/`."""
    c = Control(sim)
    app.router.add_get("/_sim/state", c.state)
    app.router.add_get("/_sim/faults", c.get_faults)
    app.router.add_put("/_sim/faults", c.set_faults)
    app.router.add_post("/_sim/clock", c.move_clock)
    app.router.add_post("/_sim/tokens/expire", c.expire_tokens)
    app.router.add_get("/_sim/tenant", c.tenant)
    app.router.add_get("/_sim/records/{id}", c.get_record)
    app.router.add_patch("/_sim/records/{id}", c.patch_record)
    app.router.add_delete("/_sim/records/{id}", c.delete_record)
    app.router.add_patch("/_sim/courses/{id}", c.patch_course)
    app.router.add_get("/_sim/changes", c.changes)
    app.router.add_get("/_sim/statuses", c.statuses)
    app.router.add_put("/_sim/activity", c.set_activity)
    app.router.add_post("/_sim/activity/steps", c.step_activity)
    app.router.add_get("/_sim/webhooks", c.get_webhooks)
    app.router.add_put("/_sim/webhooks", c.set_webhooks)
    app.router.add_post("/_sim/webhooks/send", c.send_webhook)


class Control:
    """Handlers of the control API; errors come back as 400/404 with a message."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def state(self, _request: web.Request) -> web.Response:
        """Counts of records and requests, the clock, logins and the newest change."""
        t = self.sim.tenant
        return json_response(
            {
                "now": format_datetime(self.sim.clock.now()),
                "skewSeconds": self.sim.clock.skew.total_seconds(),
                "users": len(t.users),
                "courses": len(t.courses),
                "enrollments": len(t.enrollments),
                "lessonEnrollments": len(t.lesson_enrollments),
                "chapterEnrollments": len(t.chapter_enrollments),
                "sessionEnrollments": len(t.session_enrollments),
                "attempts": len(t.attempts),
                "requests": self.sim.requests,
                "logins": self.sim.auth.logins,
                "lastChange": t.last_change_seq,
                "activityPerSecond": self.sim.activity.per_second,
                "activitySteps": self.sim.activity.steps,
            }
        )

    async def get_faults(self, _request: web.Request) -> web.Response:
        """The faults now in force."""
        return json_response(self.sim.faults.model_dump())

    async def set_faults(self, request: web.Request) -> web.Response:
        """Change some faults (fields not given keep their value)."""
        body = await self._body(request)
        try:
            self.sim.faults = self.sim.faults.model_validate(
                {**self.sim.faults.model_dump(), **body}
            )
        except ValidationError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return json_response(self.sim.faults.model_dump())

    async def move_clock(self, request: web.Request) -> web.Response:
        """`{"advance_s": N}` moves Absorb's clock on; `{"skew_s": N}` sets its offset."""
        body = await self._body(request)
        if "advance_s" in body:
            self.sim.clock.advance(float(body["advance_s"]))
        if "skew_s" in body:
            self.sim.clock.set_skew(float(body["skew_s"]))
        return json_response({"now": format_datetime(self.sim.clock.now())})

    async def expire_tokens(self, _request: web.Request) -> web.Response:
        """Invalidate every token, as if each had lived its four hours."""
        return json_response({"expired": self.sim.auth.expire_all()})

    async def tenant(self, request: web.Request) -> web.Response:
        """Users and courses with their lessons, chapters and sessions (`?limit=` caps users)."""
        t = self.sim.tenant
        limit = int(request.query.get("limit", "1000"))
        return json_response(
            {
                "admin": self.sim.admin.id,
                "users": [u.id for u in list(t.users.values())[:limit]],
                "courses": [
                    {
                        **c.to_json(),
                        "chapters": [
                            {"id": ch.id, "lessons": [le.id for le in ch.lessons]}
                            for ch in c.chapters
                        ],
                        "sessions": [s.id for s in c.sessions],
                    }
                    for c in t.courses.values()
                ],
            }
        )

    def _record(self, request: web.Request) -> Record:
        t = self.sim.tenant
        rec_id = request.match_info["id"].lower()
        for table in (
            t.enrollments,
            t.lesson_enrollments,
            t.chapter_enrollments,
            t.session_enrollments,
        ):
            found = table.get(rec_id)
            if found is not None:
                return found
        raise web.HTTPNotFound(text=f"no enrollment {rec_id}")

    async def get_record(self, request: web.Request) -> web.Response:
        """Any enrollment (course, lesson, chapter, session) by id, as Absorb renders it."""
        return _rendered(self._record(request).to_json())

    async def patch_record(self, request: web.Request) -> web.Response:
        """Set fields: `{"set": {...}}` edits and stamps; `raw` and `raw_json` force JSON values.

        `set` takes status, progress, score, dateCompleted, isActive and dateEdited
        (without dateEdited the record is stamped now). `raw` values replace fields
        in the rendered JSON as they are, which plays a malformed record; `raw_json`
        values are JSON texts written into the reply verbatim (`"1e39"`,
        `"\\"Ada \\\\ud83d\\""`; `""` leaves the field out); `{"raw": null}` clears
        both. `drill_down` makes a course enrollment's lesson, chapter and attempt lists
        answer `not_array`, `empty` or `404` (null: as they should); `duplicate` lists
        it twice in a row in its pages.
        """
        rec = self._record(request)
        body = await self._body(request)
        if "drill_down" in body:
            self._set_drill_down_fault(rec, body["drill_down"])
        if "duplicate" in body:
            if not isinstance(rec, CourseEnrollmentRec):
                raise web.HTTPBadRequest(text="only course enrollments can be listed twice")
            rec.duplicated = bool(body["duplicate"])
            self.sim.tenant.touch_record(rec)
        fields = body.get("set") or {}
        unknown = set(fields) - _SETTABLE_FIELDS
        if unknown:
            raise web.HTTPBadRequest(
                text=f"cannot set {sorted(unknown)}; settable: {sorted(_SETTABLE_FIELDS)}"
            )
        try:
            self._apply(rec, fields)
        except (SimError, TypeError, ValueError) as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        if "raw" in body or "raw_json" in body:
            rec.overrides = _overrides(body, rec.overrides)
            self.sim.tenant.touch_record(rec)
        return _rendered(rec.to_json())

    def _set_drill_down_fault(self, rec: Record, fault: Any) -> None:
        if not isinstance(rec, CourseEnrollmentRec):
            raise web.HTTPBadRequest(text="only course enrollments have drill-down lists")
        if fault is not None and fault not in DRILL_DOWN_FAULTS:
            raise web.HTTPBadRequest(
                text=f"drill_down must be null or one of {', '.join(DRILL_DOWN_FAULTS)}"
            )
        rec.drill_down_fault = fault

    async def patch_course(self, request: web.Request) -> web.Response:
        """Force JSON values into a course of `GET /courses` (`raw`, `raw_json`, as for records)."""
        course = self.sim.tenant.courses.get(request.match_info["id"].lower())
        if course is None:
            raise web.HTTPNotFound(text=f"no course {request.match_info['id']}")
        course.overrides = _overrides(await self._body(request), course.overrides)
        self.sim.tenant.touch("courses")
        return _rendered(course.to_json())

    def _apply(self, rec: Record, fields: dict[str, Any]) -> None:
        t = self.sim.tenant
        if not fields:
            return
        stamp = parse_datetime(fields["dateEdited"]) if "dateEdited" in fields else t.clock.now()
        if "status" in fields and fields["status"] != rec.status:
            old = rec.status
            rec.status = int(fields["status"])
            t.log_change(rec, old, stamp)
        if "progress" in fields:
            rec.progress = float(fields["progress"])
        if "score" in fields:
            rec.score = None if fields["score"] is None else float(fields["score"])
        if "dateCompleted" in fields:
            rec.date_completed = (
                parse_datetime(fields["dateCompleted"]) if fields["dateCompleted"] else None
            )
        if "isActive" in fields and hasattr(rec, "is_active"):
            rec.is_active = bool(fields["isActive"])
        rec.date_edited = stamp
        t.touch_record(rec)

    async def delete_record(self, request: web.Request) -> web.Response:
        """Un-enroll a course enrollment, as `POST /enrollments/unenroll` would."""
        rec = self._record(request)
        if rec.id not in self.sim.tenant.enrollments:
            raise web.HTTPBadRequest(text="only course enrollments can be deleted")
        self.sim.tenant.unenroll(self.sim.tenant.enrollments[rec.id])
        return json_response({"deleted": rec.id})

    async def changes(self, request: web.Request) -> web.Response:
        """Status changes the simulator made, oldest first, after `?after=SEQ`."""
        after = int(request.query.get("after", "0"))
        return json_response([c.to_json() for c in self.sim.tenant.changes if c.seq > after])

    async def statuses(self, _request: web.Request) -> web.Response:
        """Every course enrollment's status and whether it is active, by id."""
        return json_response(
            {
                rid: {"status": ce.status, "isActive": ce.is_active}
                for rid, ce in self.sim.tenant.enrollments.items()
            }
        )

    async def set_activity(self, request: web.Request) -> web.Response:
        """`{"per_second": R}` sets the rate of live activity (0 stops it)."""
        body = await self._body(request)
        self.sim.activity.per_second = max(0.0, float(body.get("per_second", 0)))
        return json_response({"per_second": self.sim.activity.per_second})

    async def step_activity(self, request: web.Request) -> web.Response:
        """`{"steps": N}` plays N steps of activity now (tests use this instead of waiting)."""
        body = await self._body(request)
        before = self.sim.tenant.last_change_seq
        for _ in range(int(body.get("steps", 1))):
            self.sim.activity.step()
        return json_response({"changes": self.sim.tenant.last_change_seq - before})

    async def get_webhooks(self, _request: web.Request) -> web.Response:
        """The webhook settings (secret masked) and counts of notices announced, sent, lost."""
        return self._webhooks()

    async def set_webhooks(self, request: web.Request) -> web.Response:
        """Change some webhook settings (fields not given keep their value); `url: null` stops."""
        hooks = self.sim.webhooks
        try:
            hooks.settings = hooks.settings.model_validate(
                {**hooks.settings.model_dump(), **await self._body(request)}
            )
        except ValidationError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        return self._webhooks()

    async def send_webhook(self, request: web.Request) -> web.Response:
        """`{"body": …}` sends a notice with exactly that body (signed) to the set URL."""
        body = await self._body(request)
        if "body" not in body:
            raise web.HTTPBadRequest(text='give the notice as {"body": …}')
        self.sim.webhooks.queue(body["body"])
        return self._webhooks()

    def _webhooks(self) -> web.Response:
        hooks = self.sim.webhooks
        settings = hooks.settings.model_dump()
        settings["secret"] = "***" if settings["secret"] else ""
        return json_response({**settings, **hooks.counts, "queued": hooks.pending()})


def _overrides(body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The forced values after a patch: `raw` values as they are, `raw_json` texts verbatim.

    `{"raw": null}` clears every forced value first.
    """
    if "raw" in body and body["raw"] is None:
        current = None
    raw, texts = body.get("raw") or {}, body.get("raw_json") or {}
    if not isinstance(raw, dict) or not isinstance(texts, dict):
        raise web.HTTPBadRequest(text="raw and raw_json must be JSON objects (or raw null)")
    bad = [name for name, text in texts.items() if not isinstance(text, str)]
    if bad:
        raise web.HTTPBadRequest(text=f"raw_json values must be JSON text strings: {bad}")
    merged = {**(current or {}), **raw, **{name: RawJson(t) for name, t in texts.items()}}
    return merged or None


def _rendered(body: dict[str, Any]) -> web.Response:
    """A record as the API renders it, for a test to read: raw bytes shown as `\\udcXX`."""
    text = dumps(body).encode("utf-8", "backslashreplace")
    return web.Response(body=text, content_type="application/json", charset="utf-8")
