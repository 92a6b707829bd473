"""pydantic models of the xAPI 1.0.3 statement subset the bridge sends.

Building a statement through them is its check against the spec: a mapping bug is
a clear error before sending, never a 400 from the LRS on every retry. Rules kept
from xAPI 1.0.3 (Data section 2.4): IRIs are absolute, an Agent has exactly one
identifier, `score.scaled` is within -1..1 and `raw` within `min`..`max`, durations
and timestamps are ISO 8601, language maps are keyed by language tags.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]+")
_DURATION = re.compile(r"P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?")
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def _iri(value: str) -> str:
    if not _IRI.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not an absolute IRI")
    return value


def _duration(value: str) -> str:
    if not _DURATION.fullmatch(value) or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration")
    return value


def _language_map(value: dict[str, str]) -> dict[str, str]:
    for tag in value:
        if not _LANGUAGE.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a language tag")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timestamp needs its time zone")
    return value


Iri = Annotated[str, AfterValidator(_iri)]
LanguageMap = Annotated[dict[str, str], Field(min_length=1), AfterValidator(_language_map)]


# Field names are xAPI's own (camelCase), so a model dumps as the statement it checks.
class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Account(_Part):
    """An account on a system: the learner's Absorb user id on the portal."""

    homePage: Iri
    name: str = Field(min_length=1)


class Agent(_Part):
    """The learner: exactly one identifier (an account or an mbox)."""

    objectType: Literal["Agent"] = "Agent"
    name: str | None = None
    mbox: Annotated[str, Field(pattern=r"^mailto:[^@\s]+@[^@\s]+$")] | None = None
    account: Account | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> Self:
        if (self.mbox is None) == (self.account is None):
            raise ValueError("an Agent needs exactly one identifier: mbox or account")
        return self


class Verb(_Part):
    """What the learner did."""

    id: Iri
    display: LanguageMap


class ActivityDefinition(_Part):
    """An activity's name and type."""

    name: LanguageMap | None = None
    type: Iri


class Activity(_Part):
    """A course, lesson, chapter, session or attempt as an xAPI Activity."""

    objectType: Literal["Activity"] = "Activity"
    id: Iri
    definition: ActivityDefinition | None = None


class StatementRef(_Part):
    """Another statement, by id: what a voiding statement points at."""

    objectType: Literal["StatementRef"] = "StatementRef"
    id: uuid.UUID


class Score(_Part):
    """Absorb's percentage: `raw` within `min`..`max`, `scaled` its share of 1."""

    scaled: float = Field(ge=-1, le=1, allow_inf_nan=False)
    raw: float = Field(allow_inf_nan=False)
    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _raw_in_range(self) -> Self:
        if not self.min <= self.raw <= self.max:
            raise ValueError(f"score.raw {self.raw} is outside {self.min}..{self.max}")
        return self


class Result(_Part):
    """What Absorb knows of the outcome."""

    score: Score | None = None
    success: bool | None = None
    completion: bool | None = None
    duration: Annotated[str, AfterValidator(_duration)] | None = None
    extensions: dict[Iri, Any] | None = None


class ContextActivities(_Part):
    """What a statement's activity belongs to: its `parent`, and a wider `grouping`.

    A lesson, chapter or session has its course as parent; an attempt its lesson,
    with the course as grouping.
    """

    parent: list[Activity] = Field(min_length=1)
    grouping: list[Activity] | None = Field(default=None, min_length=1)


class Context(_Part):
    """The enrollment (`registration`), the platform and the event behind the statement."""

    registration: uuid.UUID | None = None
    contextActivities: ContextActivities | None = None
    platform: str
    extensions: dict[Iri, Any]


class Statement(_Part):
    """One xAPI 1.0.3 statement as the bridge sends it (`stored` is the LRS's to set)."""

    id: uuid.UUID
    actor: Agent
    verb: Verb
    object: Activity | StatementRef
    result: Result | None = None
    context: Context
    # Left out when Absorb gives no time: the LRS then sets it to `stored`.
    timestamp: Annotated[datetime, AfterValidator(_aware)] | None = None

    def body(self) -> dict[str, Any]:
        """The statement as JSON-ready data, leaving out what it does not hold."""
        return self.model_dump(mode="json", exclude_none=True)
