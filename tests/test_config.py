"""The config file: loading, env substitution, secrets, every problem at once, check-config."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.commands.check_config import check_config
from bridge.config import (
    AmqpSinkConfig,
    Config,
    ConfigError,
    FileSinkConfig,
    HttpSinkConfig,
    NatsSinkConfig,
    RedisStreamSinkConfig,
    SlackSinkConfig,
    SqsSinkConfig,
    StdoutSinkConfig,
    config_path,
    format_duration,
    load_config,
    parse_config,
)
from bridge.durations import parse_duration

ROOT = Path(__file__).resolve().parent.parent
WHSEC = "whsec_" + base64.b64encode(b"a webhook signing key, 32 bytes").decode()
ENV = {
    "ABSORB_API_KEY": "api-key-from-env",
    "ABSORB_USERNAME": "admin",
    "ABSORB_PASSWORD": "password-from-env",
    "HR_WEBHOOK_SECRET": WHSEC,
    "ABSORB_WEBHOOK_SECRET": "absorb-webhook-secret-from-env",
}
GUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
GUID2 = "0b6f1a2c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"

# CONTRACT.md's example, as written there.
CONTRACT_EXAMPLE = """\
absorb:
  base_url: https://rest.myabsorb.com      # or the simulator, http://127.0.0.1:8089
  api_key: ${ABSORB_API_KEY}
  username: ${ABSORB_USERNAME}
  password: ${ABSORB_PASSWORD}
  max_requests_per_second: 20             # client-side budget shared by all feeds
  page_size: 500                          # _limit, 1..1000
  webhooks:                               # optional: Absorb's own webhooks, taken as hints
    listen: 0.0.0.0:8088                  # where Absorb posts (expose only this)
    path: /absorb/webhooks
    secret: ${ABSORB_WEBHOOK_SECRET}      # the webhook's Secret Key from Absorb's admin UI
redis:
  url: redis://127.0.0.1:6379/0
  prefix: absorb-bridge                   # every key starts with it
feeds:
  - name: course-enrollments
    resource: course_enrollments          # course_enrollments | lesson_enrollments | ...
    course_ids: [ "3FA85F64-5717-4562-B3FC-2C963F66AFA6" ]  # omit to sweep every course
    # lesson_enrollments: lessons: [{course_id: …, lesson_id: …}]
    # session_enrollments: sessions: [{course_id: …, session_id: …}]
    # user_enrollments: user_ids: [ … ]
    interval: 30s                         # how often each scope is swept
    lookback: 10m                         # overlap below the watermark on every sweep
    first_sync: baseline                  # baseline: record silently | emit: emit created events
    details: [lessons, chapters, attempts]  # course_enrollments only: drill into what changed
    progress_events: false                # true: also progress_changed events
    reconcile_every: 1d                   # full sweep to find removed enrollments
sinks:
  - name: audit
    type: file                            # one event per line, JSON
    path: ./events.jsonl
  - name: hr
    type: http
    url: https://hr.example.com/hooks/absorb
    secret: ${HR_WEBHOOK_SECRET}          # whsec_… (Standard Webhooks)
routes:                                   # every event goes to every route it matches
  - sinks: [audit]                        # no filter: all events
  - sinks: [hr]
    types: [absorb.course_enrollment.status_changed]
    statuses: [Complete, Failed]          # the new status, by enum name
"""


def base() -> dict[str, Any]:
    """A small valid config as plain data, for tests to break one piece at a time."""
    return {
        "absorb": {
            "base_url": "http://127.0.0.1:8089",
            "api_key": "k",
            "username": "u",
            "password": "p",
        },
        "feeds": [{"name": "courses", "resource": "course_enrollments"}],
        "sinks": [{"name": "audit", "type": "file", "path": "./events.jsonl"}],
        "routes": [{"sinks": ["audit"]}],
    }


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    """Write a config file (YAML text, or data dumped as YAML) and return its path."""
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def problems(
    tmp_path: Path, data: dict[str, Any] | str, env: dict[str, str] | None = None
) -> list[str]:
    """The problems load_config finds in a config that must not load."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), env or {})
    return info.value.problems


def load(tmp_path: Path, data: dict[str, Any] | str, env: dict[str, str] | None = None) -> Config:
    """Load a config that must be valid."""
    config, _ = load_config(write(tmp_path, data), env or {})
    return config


# ---- the contract's example and the shipped example -------------------------------------


def test_contract_example_loads(tmp_path: Path) -> None:
    """CONTRACT.md's example config loads, with defaults filled in and GUIDs lowercased."""
    config, warnings = load_config(write(tmp_path, CONTRACT_EXAMPLE), ENV)
    assert warnings == []
    assert config.absorb.base_url == "https://rest.myabsorb.com"
    assert config.absorb.api_key.get_secret_value() == "api-key-from-env"
    assert config.absorb.username == "admin"
    assert config.absorb.page_size == 500
    assert config.absorb.timeout_s == 30.0
    assert config.redis.prefix == "absorb-bridge"
    (feed,) = config.feeds
    assert feed.course_ids == [GUID]
    assert (feed.interval_s, feed.lookback_s, feed.reconcile_every_s) == (30.0, 600.0, 86400.0)
    assert feed.max_interval_s is None  # opt-in: no backoff unless asked for
    assert feed.details == ["lessons", "chapters", "attempts"]
    audit, hr = config.sinks
    assert isinstance(audit, FileSinkConfig)
    assert audit.fsync is True
    assert isinstance(hr, HttpSinkConfig)
    assert [s.get_secret_value() for s in hr.signing_secrets()] == [WHSEC]
    assert (hr.mode, hr.timeout_s, hr.max_in_flight) == ("structured", 15.0, 8)
    assert config.routes[1].statuses == ["Complete", "Failed"]
    assert config.http.listen == "127.0.0.1:9464"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9464)


def test_example_file_validates() -> None:
    """config/example.yaml validates with the environment it documents and warns of nothing."""
    config, warnings = load_config(ROOT / "config" / "example.yaml", ENV)
    assert warnings == []
    assert [s.name for s in config.sinks] == ["audit", "hr"]


@pytest.mark.parametrize("name", ["slack.yaml", "hris-webhook.yaml", "audit-stream.yaml"])
def test_the_other_example_configs_validate(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example config under config/ validates, from the repository's top folder."""
    monkeypatch.chdir(ROOT)
    env = {
        **ENV,
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/xyz",
        "HR_API_TOKEN": "token-123",
    }
    config, warnings = load_config(ROOT / "config" / name, env)
    assert warnings == []
    assert config.routes


def test_region_short_name_becomes_its_url(tmp_path: Path) -> None:
    """absorb.base_url accepts a region short name and a URL (trailing slash dropped)."""
    data = base()
    data["absorb"]["base_url"] = "eu"
    assert load(tmp_path, data).absorb.base_url == "https://rest.myabsorb.eu"
    data["absorb"]["base_url"] = "http://127.0.0.1:8089/"
    assert load(tmp_path, data).absorb.base_url == "http://127.0.0.1:8089"


# ---- environment substitution ---------------------------------------------------------


def test_env_substitution_everywhere(tmp_path: Path) -> None:
    """`${NAME}` is replaced in any string, inside lists and mid-string, and numbers still parse."""
    data = base()
    data["absorb"]["page_size"] = "${PAGE}"
    data["feeds"][0]["interval"] = "${EVERY}"
    data["sinks"].append({"name": "hr", "type": "http", "url": "https://${HOST}/hook"})
    data["sinks"][1]["secret"] = "${SECRET}"
    data["routes"][0]["sinks"] = ["audit", "${SINK}"]
    env = {"PAGE": "250", "EVERY": "2m", "HOST": "hr.example.com", "SECRET": WHSEC, "SINK": "hr"}
    config = load(tmp_path, data, env)
    assert config.absorb.page_size == 250
    assert config.feeds[0].interval_s == 120.0
    hr = config.sink("hr")
    assert isinstance(hr, HttpSinkConfig)
    assert hr.url == "https://hr.example.com/hook"
    assert config.routes[0].sinks == ["audit", "hr"]


def test_missing_env_variable_names_it_and_its_path(tmp_path: Path) -> None:
    """A variable that is not set is one problem naming the variable and where it was used."""
    env = {k: v for k, v in ENV.items() if k != "ABSORB_API_KEY"}
    assert problems(tmp_path, CONTRACT_EXAMPLE, env) == [
        "absorb.api_key: environment variable ABSORB_API_KEY is not set"
    ]


def test_missing_env_variable_in_a_list_and_a_typed_field(tmp_path: Path) -> None:
    """Unset variables are named at list paths too, without a second complaint about the value."""
    data = base()
    data["feeds"][0]["interval"] = "${EVERY}"
    data["routes"][0]["sinks"] = ["${SINK}"]
    assert problems(tmp_path, data) == [
        "feeds[0].interval: environment variable EVERY is not set",
        "routes[0].sinks[0]: environment variable SINK is not set",
        "routes[0].sinks: unknown sink '${SINK}' (sinks: audit)",
    ]


def test_variable_set_to_empty_is_an_empty_value(tmp_path: Path) -> None:
    """A variable set to the empty string substitutes it, and an empty secret is a problem."""
    assert problems(tmp_path, CONTRACT_EXAMPLE, {**ENV, "ABSORB_API_KEY": ""}) == [
        "absorb.api_key: must not be empty"
    ]


def test_dollar_dollar_escapes_a_literal_reference(tmp_path: Path) -> None:
    """`$${` stands for a literal `${`, and is not looked up in the environment."""
    data = base()
    data["sinks"].append(
        {
            "name": "hr",
            "type": "http",
            "url": "https://hr.example.com/hook",
            "secret": WHSEC,
            "headers": {"X-Template": "$${NOT_A_VARIABLE} and $${X}${Y}"},
        }
    )
    hr = load(tmp_path, data, {"Y": "y"}).sink("hr")
    assert isinstance(hr, HttpSinkConfig)
    assert hr.headers == {"X-Template": "${NOT_A_VARIABLE} and ${X}y"}


def test_malformed_references_are_problems(tmp_path: Path) -> None:
    """An unterminated `${` or a reference that is not a name is a problem at its path."""
    data = base()
    data["absorb"]["username"] = "u${"
    data["absorb"]["password"] = "${not-a-name}"
    found = problems(tmp_path, data)
    assert found[0] == "absorb.username: unterminated ${ (write $${ for a literal ${)"
    assert found[1].startswith("absorb.password: ${not-a-name} is not a variable")
    assert len(found) == 2


# ---- secrets from files ---------------------------------------------------------------


def test_secret_file_is_read_with_one_newline_stripped(tmp_path: Path) -> None:
    """`<key>_file` reads the secret from a file, dropping exactly one trailing newline."""
    key_file = tmp_path / "api-key"
    key_file.write_text("key-from-file\n")
    password_file = tmp_path / "password"
    password_file.write_text("pass word\n\n")
    data = base()
    del data["absorb"]["api_key"], data["absorb"]["password"]
    data["absorb"]["api_key_file"] = str(key_file)
    data["absorb"]["password_file"] = "${PASSWORD_FILE}"
    config = load(tmp_path, data, {"PASSWORD_FILE": str(password_file)})
    assert config.absorb.api_key.get_secret_value() == "key-from-file"
    assert config.absorb.password.get_secret_value() == "pass word\n"


def test_secret_files_in_sinks_and_urls(tmp_path: Path) -> None:
    """Sink secrets, a rotation list (one a line) and URLs with passwords may come from files."""
    secrets_file = tmp_path / "secrets"
    other = "whsec_" + base64.b64encode(b"the next key").decode()
    secrets_file.write_text(f"{WHSEC}\n{other}\n")
    url_file = tmp_path / "redis-url"
    url_file.write_text("redis://:pw@127.0.0.1:6379/1\n")
    data = base()
    data["redis"] = {"url_file": str(url_file)}
    data["sinks"] = [
        {
            "name": "hr",
            "type": "http",
            "url": "https://x.example",
            "secrets_file": str(secrets_file),
        }
    ]
    data["routes"] = [{"sinks": ["hr"]}]
    config = load(tmp_path, data)
    assert config.redis.url == "redis://:pw@127.0.0.1:6379/1"
    hr = config.sink("hr")
    assert isinstance(hr, HttpSinkConfig)
    assert [s.get_secret_value() for s in hr.signing_secrets()] == [WHSEC, other]


def test_secret_and_its_file_together_is_a_problem(tmp_path: Path) -> None:
    """Giving both `<key>` and `<key>_file` is a problem at the key."""
    key_file = tmp_path / "api-key"
    key_file.write_text("k")
    data = base()
    data["absorb"]["api_key_file"] = str(key_file)
    assert problems(tmp_path, data) == ["absorb.api_key: give api_key or api_key_file, not both"]


def test_unreadable_secret_file_names_the_path(tmp_path: Path) -> None:
    """A missing secret file is a problem at `<key>_file` naming the file, other checks go on."""
    missing = tmp_path / "no-such-file"
    data = base()
    del data["absorb"]["password"]
    data["absorb"]["password_file"] = str(missing)
    data["absorb"]["page_size"] = 0
    assert problems(tmp_path, data) == [
        f"absorb.password_file: cannot read {missing}: No such file or directory",
        "absorb.page_size: must be at least 1",
    ]


def test_missing_secret_mentions_the_file_alternative(tmp_path: Path) -> None:
    """A required secret that is absent says it may come from `<key>_file`."""
    data = base()
    del data["absorb"]["api_key"]
    assert problems(tmp_path, data) == [
        "absorb.api_key: required (or api_key_file: a file holding it)"
    ]


# ---- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (45, 45.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("2.5s", 2.5),
    ],
)
def test_every_duration_form(tmp_path: Path, written: str | float, seconds: float) -> None:
    """Durations accept ms, s, m, h, d and bare seconds, stored as float seconds."""
    data = base()
    data["feeds"][0]["interval"] = written
    assert load(tmp_path, data).feeds[0].interval_s == seconds


@pytest.mark.parametrize("written", ["soon", "-5s", "5 weeks", "", True, [5], "1.5.2s"])
def test_bad_durations(tmp_path: Path, written: Any) -> None:
    """Anything else is one problem at the duration's path."""
    data = base()
    data["feeds"][0]["interval"] = written
    (found,) = problems(tmp_path, data)
    assert found.startswith("feeds[0].interval: ")


def test_zero_interval_is_refused_but_zero_lookback_is_fine(tmp_path: Path) -> None:
    """An interval must be positive; a lookback of 0 means no overlap."""
    data = base()
    data["feeds"][0]["lookback"] = 0
    assert load(tmp_path, data).feeds[0].lookback_s == 0.0
    data["feeds"][0]["interval"] = "0s"
    assert problems(tmp_path, data) == ["feeds[0].interval: must be greater than 0"]


@pytest.mark.parametrize(
    "seconds", [0.0, 0.5, 1.0, 1.5, 45.0, 90.0, 600.0, 7200.0, 86400.0, 0.0001]
)
def test_format_duration_reads_back(seconds: float) -> None:
    """format_duration writes what parse_duration reads back to the same seconds."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_max_interval_is_opt_in_and_bounded(tmp_path: Path) -> None:
    """max_interval is unset unless asked for (no backoff), and may not be set below interval."""
    data = base()
    assert load(tmp_path, data).feeds[0].max_interval_s is None
    data["feeds"][0]["interval"] = "10m"
    data["feeds"][0]["max_interval"] = "20m"
    assert load(tmp_path, data).feeds[0].max_interval_s == 1200.0
    data["feeds"][0]["max_interval"] = "1m"
    assert problems(tmp_path, data) == ["feeds[0].max_interval: must be at least interval (10m)"]


# ---- every problem at once ------------------------------------------------------------


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    """Five different mistakes give five problems, each at its path, in file order."""
    data = base()
    data["absorb"]["page_size"] = 5000
    data["feeds"][0]["interval"] = "often"
    data["sinks"].append({"name": "hr", "type": "http", "url": "ftp://hr.example", "secret": WHSEC})
    data["routes"] = [{"sinks": ["nope"]}, {"sinks": ["audit", "hr"], "statuses": ["Done"]}]
    found = problems(tmp_path, data)
    assert len(found) == 5, found
    assert found[0] == "absorb.page_size: must be at most 1000"
    assert found[1].startswith("feeds[0].interval: 'often' is not a duration")
    assert found[2] == "sinks[1].url: must be a URL starting with http:// or https://"
    assert found[3] == "routes[0].sinks: unknown sink 'nope' (sinks: audit, hr)"
    assert found[4].startswith("routes[1].statuses[0]: unknown status 'Done'")


def test_config_error_lists_every_problem_on_its_own_line(tmp_path: Path) -> None:
    """str(ConfigError) is the problems, one a line."""
    data = base()
    data["absorb"]["page_size"] = 0
    data["feeds"][0]["interval"] = "often"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), {})
    assert str(info.value).splitlines() == info.value.problems
    assert info.value.path == tmp_path / "config.yaml"


def test_unknown_keys_are_named_with_their_path(tmp_path: Path) -> None:
    """Unknown keys anywhere are problems at their path, with a suggestion when one is close."""
    data = base()
    data["sink"] = []
    data["feeds"][0]["intreval"] = "5s"
    data["sinks"][0]["colour"] = "red"
    data["redis"] = {"url": "redis://127.0.0.1:6379/0", "prefx": "x"}
    found = problems(tmp_path, data)
    assert "sink: unknown key (did you mean 'sinks'?)" in found
    assert "feeds[0].intreval: unknown key (did you mean 'interval'?)" in found
    assert "redis.prefx: unknown key (did you mean 'prefix'?)" in found
    known = "name, max_dead_letters, personal_data, type, path, fsync"
    assert f"sinks[0].colour: unknown key (known keys: {known})" in found
    assert len(found) == 4


def test_python_field_names_are_not_yaml_keys(tmp_path: Path) -> None:
    """The YAML keys are the contract's: `interval_s` is unknown, `interval` is the key."""
    data = base()
    data["feeds"][0]["interval_s"] = 5
    assert problems(tmp_path, data) == [
        "feeds[0].interval_s: unknown key (did you mean 'interval'?)"
    ]


def test_missing_sections_and_wrong_shapes(tmp_path: Path) -> None:
    """Required sections, empty feeds and wrong shapes are named plainly."""
    assert problems(tmp_path, {"feeds": []}) == [
        "absorb: required",
        "feeds: must not be empty",
    ]
    data = base()
    data["sinks"] = {"audit": {}}
    data["absorb"]["page_size"] = "many"
    assert problems(tmp_path, data) == [
        "absorb.page_size: must be a whole number",
        "sinks: must be a list",
    ]


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    """An empty file or a top level that is not a mapping is one clear problem."""
    assert problems(tmp_path, "") == ["(top level): the file is empty"]
    (found,) = problems(tmp_path, "- a\n- b\n")
    assert found.startswith("(top level): must be a mapping")


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A config file that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", {})
    assert info.value.problems == [
        f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    ]


# ---- feeds ----------------------------------------------------------------------------


def test_feed_scopes_for_each_resource(tmp_path: Path) -> None:
    """Each resource takes its own scope list, with GUIDs validated and lowercased."""
    data = base()
    data["feeds"] = [
        {
            "name": "lessons",
            "resource": "lesson_enrollments",
            "lessons": [{"course_id": GUID.upper(), "lesson_id": GUID2}],
        },
        {
            "name": "sessions",
            "resource": "session_enrollments",
            "sessions": [{"course_id": GUID, "session_id": GUID2}],
        },
        {"name": "users", "resource": "user_enrollments", "user_ids": [GUID2]},
        {"name": "all-courses", "resource": "course_enrollments", "first_sync": "emit"},
    ]
    lessons, sessions, users, courses = load(tmp_path, data).feeds
    assert lessons.lessons is not None
    assert lessons.lessons[0].course_id == GUID
    assert sessions.sessions is not None
    assert sessions.sessions[0].session_id == GUID2
    assert users.user_ids == [GUID2]
    assert courses.course_ids is None
    assert courses.first_sync == "emit"
    assert courses.details == []


def test_feed_resource_cross_checks(tmp_path: Path) -> None:
    """Scope keys are required for their resource and refused on any other, all reported."""
    data = base()
    data["feeds"] = [
        {"name": "a", "resource": "lesson_enrollments"},
        {
            "name": "b",
            "resource": "course_enrollments",
            "lessons": [{"course_id": GUID, "lesson_id": GUID}],
        },
        {"name": "c", "resource": "session_enrollments", "user_ids": [GUID]},
        {"name": "d", "resource": "user_enrollments", "details": ["lessons"], "course_ids": [GUID]},
        {"name": "e", "resource": "courses"},
    ]
    assert problems(tmp_path, data) == [
        "feeds[0].lessons: required for resource lesson_enrollments:"
        " a list of {course_id, lesson_id}",
        "feeds[1].lessons: only for resource lesson_enrollments, not course_enrollments",
        "feeds[2].sessions: required for resource session_enrollments:"
        " a list of {course_id, session_id}",
        "feeds[2].user_ids: only for resource user_enrollments, not session_enrollments",
        "feeds[3].course_ids: only for resource course_enrollments, not user_enrollments",
        "feeds[3].user_ids: required for resource user_enrollments: a list of user GUIDs",
        "feeds[3].details: only for resource course_enrollments, not user_enrollments",
        "feeds[4].resource: must be 'course_enrollments', 'lesson_enrollments',"
        " 'session_enrollments' or 'user_enrollments'",
    ]


def test_feed_field_values(tmp_path: Path) -> None:
    """Names are slugs, GUIDs are GUIDs, details and first_sync take their listed values."""
    data = base()
    data["feeds"][0].update(
        name="Course Feed",
        course_ids=["not-a-guid"],
        details=["lessons", "grades"],
        first_sync="later",
        progress_events="maybe",
    )
    found = problems(tmp_path, data)
    assert found[0].startswith("feeds[0].name: 'Course Feed' is not a valid name")
    assert found[1].startswith("feeds[0].course_ids[0]: 'not-a-guid' is not a GUID")
    assert found[2] == "feeds[0].first_sync: must be 'baseline' or 'emit'"
    assert found[3] == "feeds[0].details[1]: must be 'lessons', 'chapters' or 'attempts'"
    assert found[4] == "feeds[0].progress_events: must be true or false"
    assert len(found) == 5


# ---- sinks ----------------------------------------------------------------------------


def every_sink(tmp_path: Path) -> list[dict[str, Any]]:
    """One sink of each type with only its required keys."""
    template = tmp_path / "slack.j2"
    template.write_text("{{ event.type }}")
    return [
        {"name": "audit", "type": "file", "path": "./events.jsonl"},
        {"name": "console", "type": "stdout"},
        {"name": "hr", "type": "http", "url": "https://hr.example/hook", "secret": WHSEC},
        {
            "name": "slack",
            "type": "slack",
            "webhook_url": "https://hooks.slack.example/T/B/x",
            "templates": {"default": str(template)},
        },
        {"name": "stream", "type": "redis_stream", "stream": "absorb-events"},
        {"name": "nats", "type": "nats"},
        {"name": "rabbit", "type": "amqp", "url": "amqp://guest:guest@127.0.0.1:5672/"},
        {
            "name": "queue",
            "type": "sqs",
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/events.fifo",
        },
    ]


def test_every_sink_type_with_defaults(tmp_path: Path) -> None:
    """Each sink type loads from its required keys, with the documented defaults."""
    data = base()
    data["redis"] = {"url": "redis://10.0.0.5:6379/2"}
    data["sinks"] = every_sink(tmp_path)
    data["routes"] = [{"sinks": [s["name"] for s in data["sinks"]]}]
    sinks = load(tmp_path, data).sinks
    file, stdout, http, slack, stream, nats, amqp, sqs = sinks
    assert isinstance(file, FileSinkConfig)
    assert file.path == Path("events.jsonl")
    assert file.fsync
    assert isinstance(stdout, StdoutSinkConfig)
    assert stdout.format == "json"
    assert isinstance(http, HttpSinkConfig)
    assert (http.mode, http.tls_verify, http.headers, http.retry_schedule_s) == (
        "structured",
        True,
        {},
        None,
    )
    assert isinstance(slack, SlackSinkConfig)
    assert slack.rate_limit_per_s == 1.0
    assert isinstance(stream, RedisStreamSinkConfig)
    assert stream.url == "redis://10.0.0.5:6379/2"
    assert stream.maxlen is None
    assert isinstance(nats, NatsSinkConfig)
    assert nats.servers == ["nats://127.0.0.1:4222"]
    assert nats.subject == "absorb.{resource}.{change}"
    assert isinstance(amqp, AmqpSinkConfig)
    assert (amqp.exchange, amqp.routing_key) == ("", "absorb.{resource}.{change}")
    assert isinstance(sqs, SqsSinkConfig)
    assert sqs.fifo is True


def test_growth_caps_default_and_are_checked(tmp_path: Path) -> None:
    """The quarantine and dead-letter caps and the removed-sink grace period have their
    documented defaults, can be set (on any sink type), and bad values are named by path."""
    data = base()
    data["sinks"] = every_sink(tmp_path)
    data["routes"] = [{"sinks": [s["name"] for s in data["sinks"]]}]
    config = load(tmp_path, data)
    assert config.redis.max_quarantined == 10_000
    assert config.redis.removed_sink_grace_s == 7 * 86400
    assert {sink.max_dead_letters for sink in config.sinks} == {10_000}
    data["redis"] = {"max_quarantined": 50, "removed_sink_grace": "2d"}
    data["sinks"][2]["max_dead_letters"] = 100
    config = load(tmp_path, data)
    assert (config.redis.max_quarantined, config.redis.removed_sink_grace_s) == (50, 172800)
    assert config.sinks[2].max_dead_letters == 100
    assert config.masked()["redis"]["removed_sink_grace"] == "2d"
    data["redis"] = {"max_quarantined": 0, "removed_sink_grace": "soon"}
    data["sinks"][0]["max_dead_letters"] = -1
    found = problems(tmp_path, data)
    assert any(p.startswith("redis.max_quarantined:") for p in found), found
    assert any(p.startswith("redis.removed_sink_grace:") for p in found), found
    assert any(p.startswith("sinks[0].max_dead_letters:") for p in found), found


def test_sink_union_errors_have_clean_paths(tmp_path: Path) -> None:
    """Sink problems are at `sinks[i].key`: no type tag or validator names in the path."""
    data = base()
    data["sinks"] = [
        {"name": "a", "type": "carrier-pigeon"},
        {"name": "b"},
        {"name": "c", "type": "http", "secret": "not-whsec", "max_in_flight": 0},
        {"name": "d", "type": "slack", "webhook_url": "http://hooks.slack.example/x"},
        {"name": "e", "type": "nats", "servers": ["http://x"], "subject": "a.{resurce}"},
        {"name": "f", "type": "sqs", "queue_url": "https://sqs.example/q", "fifo": True},
        "g",
    ]
    data["routes"] = [{"sinks": ["a", "b", "c", "d", "e", "f"]}]
    found = problems(tmp_path, data)
    assert found == [
        "sinks[0].type: unknown sink type 'carrier-pigeon' (types: file, stdout, http, slack,"
        " redis_stream, nats, amqp, sqs, xapi)",
        "sinks[1].type: required: the kind of sink (file, stdout, http, slack, redis_stream,"
        " nats, amqp, sqs, xapi)",
        "sinks[2].url: required",
        "sinks[2].secret: must be a Standard Webhooks secret: whsec_ followed by base64",
        "sinks[2].max_in_flight: must be at least 1",
        "sinks[3].webhook_url: must be a URL starting with https://",
        "sinks[4].servers[0]: must be a URL starting with nats:// or tls:// or ws:// or wss://",
        "sinks[4].subject: unknown field {resurce} (fields: type, resource, change, status,"
        " feed, subject)",
        "sinks[5].fifo: must match the queue: FIFO queue URLs end with .fifo",
        "sinks[6]: must be a mapping (key: value)",
    ]
    assert not any("function" in p or "[http]" in p or ".http." in p for p in found)


def test_http_sink_rules(tmp_path: Path) -> None:
    """An http sink needs exactly one of secret/secrets, one kind of auth, and no bridge headers."""
    data = base()
    hr = {"name": "hr", "type": "http", "url": "https://hr.example/hook"}
    data["sinks"] = [
        hr,
        {**hr, "name": "b", "secret": WHSEC, "secrets": [WHSEC]},
        {
            **hr,
            "name": "c",
            "secret": WHSEC,
            "bearer_token": "t",
            "basic_auth": {"username": "u", "password": "p"},
        },
        {**hr, "name": "d", "secret": WHSEC, "headers": {"webhook-signature": "x"}},
        {**hr, "name": "e", "secret": "whsec_!!!", "template": str(tmp_path / "none.j2")},
    ]
    data["routes"] = [{"sinks": ["hr", "b", "c", "d", "e"]}]
    assert problems(tmp_path, data) == [
        "sinks[0].secret: required: the whsec_ secret that signs deliveries (or secrets)",
        "sinks[1].secrets: give secret or secrets, not both",
        "sinks[2].basic_auth: give bearer_token or basic_auth, not both",
        "sinks[3].headers: webhook-signature is set by the bridge and cannot be overridden",
        "sinks[4].secret: the part after whsec_ is not valid base64",
        f"sinks[4].template: no such file: {tmp_path / 'none.j2'}",
    ]


def test_http_sink_options(tmp_path: Path) -> None:
    """The http sink's optional keys load: rotation list, retry schedule, limits."""
    data = base()
    data["sinks"] = [
        {
            "name": "hr",
            "type": "http",
            "url": "http://127.0.0.1:9000/hook",
            "secrets": [WHSEC, WHSEC.replace("a", "b", 1)],
            "mode": "binary",
            "basic_auth": {"username": "u", "password": "p"},
            "timeout": "2s",
            "retry_schedule": ["1s", "30s", "5m"],
            "rate_limit_per_s": 5,
            "tls_verify": False,
        }
    ]
    data["routes"] = [{"sinks": ["hr"]}]
    hr = load(tmp_path, data).sinks[0]
    assert isinstance(hr, HttpSinkConfig)
    assert len(hr.signing_secrets()) == 2
    assert hr.retry_schedule_s == [1.0, 30.0, 300.0]
    assert (hr.mode, hr.timeout_s, hr.rate_limit_per_s, hr.tls_verify) == (
        "binary",
        2.0,
        5.0,
        False,
    )
    assert hr.basic_auth is not None
    assert hr.basic_auth.password.get_secret_value() == "p"


def test_duplicate_names(tmp_path: Path) -> None:
    """Two feeds or two sinks with one name are problems naming both places."""
    data = base()
    data["feeds"].append({"name": "courses", "resource": "course_enrollments"})
    data["sinks"].append({"name": "audit", "type": "stdout"})
    assert problems(tmp_path, data) == [
        "feeds[1].name: duplicate name 'courses' (feeds[0] too)",
        "sinks[1].name: duplicate name 'audit' (sinks[0] too)",
    ]


def test_unrouted_sink_is_a_warning(tmp_path: Path) -> None:
    """A sink no route names loads, with a warning saying so; no routes at all warns too."""
    data = base()
    data["sinks"].append({"name": "console", "type": "stdout"})
    _, warnings = load_config(write(tmp_path, data), {})
    assert warnings == ["sinks[1]: no route names sink 'console', so it receives no events"]
    data["routes"] = []
    _, warnings = load_config(write(tmp_path, data), {})
    assert warnings[-1] == "routes: none given, so events are detected but delivered nowhere"


# ---- routes ---------------------------------------------------------------------------


def test_route_filters_load(tmp_path: Path) -> None:
    """Route filters keep event types, status names, GUIDs and feed names."""
    data = base()
    data["routes"] = [
        {
            "sinks": ["audit"],
            "types": ["absorb.attempt.created", "absorb.chapter_enrollment.removed"],
            "statuses": ["Complete"],
            "previous_statuses": ["InProgress", "NotStarted"],
            "course_ids": [GUID.upper()],
            "feeds": ["courses"],
        }
    ]
    (route,) = load(tmp_path, data).routes
    assert route.types == ["absorb.attempt.created", "absorb.chapter_enrollment.removed"]
    assert route.previous_statuses == ["InProgress", "NotStarted"]
    assert route.course_ids == [GUID]
    assert route.feeds == ["courses"]


def test_route_problems(tmp_path: Path) -> None:
    """Unknown statuses list the valid names; types follow the grammar; refs must exist."""
    data = base()
    data["routes"] = [
        {
            "sinks": ["audit"],
            "types": ["absorb.course_enrollment.finished", "course_enrollment.created"],
            "statuses": ["Completed"],
            "previous_statuses": ["complete"],
            "feeds": ["lessons"],
        },
        {"sinks": []},
        {"statuses": ["Failed"]},
    ]
    found = problems(tmp_path, data)
    assert found[0] == "routes[0].feeds: unknown feed 'lessons' (feeds: courses)"
    assert found[1].startswith(
        "routes[0].types[0]: 'absorb.course_enrollment.finished': unknown change 'finished'"
    )
    assert found[2].startswith("routes[0].types[1]: 'course_enrollment.created' is not an event")
    assert found[3] == (
        "routes[0].statuses[0]: unknown status 'Completed' (did you mean 'Complete'? statuses:"
        " NotStarted, InProgress, PendingApproval, Complete, NotComplete, Failed, Declined,"
        " PendingEvaluationRequired, OnWaitlist, Absent, NotApplicable, PendingProctor,"
        " ReadyForReview)"
    )
    assert found[4].startswith("routes[0].previous_statuses[0]: unknown status 'complete'")
    assert found[5:] == ["routes[1].sinks: must not be empty", "routes[2].sinks: required"]


# ---- YAML -----------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error is one problem with its line and column."""
    text = "absorb:\n  base_url: http://x\n  api_key: [unclosed\nfeeds: []\n"
    (found,) = problems(tmp_path, text)
    assert found.startswith("line 4, column 6: ")


def test_duplicate_yaml_keys_are_problems_with_their_line(tmp_path: Path) -> None:
    """A key given twice in one mapping is a problem with its line, alongside other problems."""
    text = yaml.safe_dump(base(), sort_keys=False).replace(
        "  username: u\n", "  username: u\n  username: v\n  page_size: 0\n"
    )
    found = problems(tmp_path, text)
    assert found == [
        "line 5, column 3: duplicate key 'username'",
        "absorb.page_size: must be at least 1",
    ]


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    """Python object tags are refused: the file is read with a safe loader."""
    text = "absorb: !!python/object/apply:os.system ['true']\n"
    (found,) = problems(tmp_path, text)
    assert found.startswith("line 1, column 9: ")


# ---- secrets never shown --------------------------------------------------------------

SECRETS = {
    "API_KEY": "SEKRIT-api-key-1",
    "PASSWORD": "SEKRIT-password-2",
    "HMAC": base64.b64encode(b"SEKRIT-hmac-key-3").decode(),
    "HMAC2": base64.b64encode(b"SEKRIT-hmac-key-4").decode(),
    "BEARER": "SEKRIT-bearer-5",
    "BASIC": "SEKRIT-basic-6",
    "NATS": "SEKRIT-nats-7",
    "AWS": "SEKRIT-aws-8",
    "AMQP": "SEKRIT-amqp-9",
    "REDIS": "SEKRIT-redis-10",
    "STREAM": "SEKRIT-stream-11",
    "SLACK": "SEKRIT-slack-12",
    "NATSURL": "SEKRIT-natsurl-13",
    "HEADER": "SEKRIT-header-14",
    "LRS": "SEKRIT-lrs-15",
    "LRSTOKEN": "SEKRIT-lrstoken-16",
}


def secret_config() -> dict[str, Any]:
    """A valid config with a known secret in every secret field."""
    data = base()
    data["absorb"].update(api_key="${API_KEY}", password="${PASSWORD}")
    data["redis"] = {"url": "redis://user:${REDIS}@127.0.0.1:6379/0"}
    data["sinks"] = [
        {
            "name": "hr",
            "type": "http",
            "url": "https://hr.example/hook",
            "secret": "whsec_${HMAC}",
            "bearer_token": "${BEARER}",
            "headers": {"X-Api-Key": "${HEADER}"},
        },
        {
            "name": "hr2",
            "type": "http",
            "url": "https://hr.example/hook",
            "secrets": ["whsec_${HMAC}", "whsec_${HMAC2}"],
            "basic_auth": {"username": "u", "password": "${BASIC}"},
        },
        {"name": "slack", "type": "slack", "webhook_url": "https://hooks.slack.example/${SLACK}"},
        {
            "name": "stream",
            "type": "redis_stream",
            "stream": "s",
            "url": "redis://:${STREAM}@127.0.0.1:6379/1",
        },
        {
            "name": "nats",
            "type": "nats",
            "token": "${NATS}",
            "servers": ["nats://u:${NATSURL}@127.0.0.1:4222"],
        },
        {"name": "rabbit", "type": "amqp", "url": "amqps://bridge:${AMQP}@mq.example:5671/vh"},
        {
            "name": "queue",
            "type": "sqs",
            "queue_url": "https://sqs.example/1/q",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "${AWS}",
        },
        {
            "name": "lrs",
            "type": "xapi",
            "endpoint": "https://lrs.example/xAPI/",
            "username": "key",
            "password": "${LRS}",
        },
        {
            "name": "lrs2",
            "type": "xapi",
            "endpoint": "https://lrs.example/xAPI",
            "bearer_token": "${LRSTOKEN}",
        },
    ]
    data["routes"] = [{"sinks": [s["name"] for s in data["sinks"]]}]
    return data


def assert_no_secret(text: str) -> None:
    """Fail if any known secret appears in `text`."""
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} leaked"
        assert "SEKRIT" not in text


def test_masked_config_never_shows_a_secret(tmp_path: Path) -> None:
    """masked() and check-config's printout show *** for every secret and URL password."""
    path = write(tmp_path, secret_config())
    config, _ = load_config(path, SECRETS)
    assert config.absorb.api_key.get_secret_value() == SECRETS["API_KEY"]
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), SECRETS, out, err) == 0
    printed = out.getvalue() + err.getvalue() + repr(config) + str(config)
    assert_no_secret(printed)
    shown = yaml.safe_load(out.getvalue())
    assert shown == config.masked()
    assert shown["absorb"]["api_key"] == "***"
    assert shown["redis"]["url"] == "redis://user:***@127.0.0.1:6379/0"
    assert shown["sinks"][0]["headers"] == {"X-Api-Key": "***"}
    assert shown["sinks"][1]["secrets"] == ["***", "***"]
    assert shown["sinks"][3]["url"] == "redis://:***@127.0.0.1:6379/1"
    assert shown["sinks"][4]["servers"] == ["nats://u:***@127.0.0.1:4222"]
    assert shown["sinks"][5]["url"] == "amqps://bridge:***@mq.example:5671/vh"
    assert shown["sinks"][6]["access_key_id"] == "AKIDEXAMPLE"


def test_error_messages_never_show_a_secret(tmp_path: Path) -> None:
    """Problems about secret fields, URLs with passwords and YAML lines never echo the secret."""
    data = secret_config()
    data["absorb"]["api_key"] = ["${API_KEY}"]
    data["absorb"]["page_size"] = "${PASSWORD}"
    data["redis"]["url"] = "http://user:${REDIS}@127.0.0.1"
    data["sinks"][0]["secret"] = "${HMAC}"
    data["sinks"][1]["secrets"] = ["whsec_${BEARER}!"]
    data["sinks"][2]["webhook_url"] = "http://hooks.slack.example/${SLACK}"
    data["sinks"][3]["url"] = "redis//:${STREAM}@x"
    data["sinks"][4]["servers"] = ["http://u:${NATSURL}@x"]
    data["sinks"][4]["credentials"] = 5
    data["sinks"][5]["url"] = "http://bridge:${AMQP}@mq"
    data["sinks"][6]["secret_access_key"] = {"${AWS}": 1}
    data["sinks"][6]["sekrit"] = "${BASIC}"
    found = problems(tmp_path, data, SECRETS)
    assert len(found) == 12, found
    assert_no_secret("\n".join(found))
    # A YAML error on a line holding a secret does not quote the line.
    text = f"absorb:\n  password: {SECRETS['PASSWORD']}: {SECRETS['API_KEY']}\n"
    (found_yaml,) = problems(tmp_path, text)
    assert_no_secret(found_yaml)
    # Neither does a duplicate key.
    text = f"absorb:\n  api_key: {SECRETS['API_KEY']}\n  api_key: {SECRETS['AWS']}\n"
    assert_no_secret("\n".join(problems(tmp_path, text)))


def test_webhooks_take_a_secret_file_and_never_show_it(tmp_path: Path) -> None:
    """absorb.webhooks reads its secret from secret_file too; masked() and check-config show
    ***; listen and path default to CONTRACT.md's."""
    secret_file = tmp_path / "hook-secret"
    secret_file.write_text("hook-SEKRIT-value\n")
    data = base()
    data["absorb"]["webhooks"] = {"secret_file": str(secret_file)}
    path = write(tmp_path, data)
    config, _ = load_config(path, {})
    hooks = config.absorb.webhooks
    assert hooks is not None
    assert hooks.secret.get_secret_value() == "hook-SEKRIT-value"
    assert (hooks.host, hooks.port, hooks.path) == ("0.0.0.0", 8088, "/absorb/webhooks")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), {}, out, err) == 0
    assert "SEKRIT" not in out.getvalue() + err.getvalue() + repr(config)
    assert yaml.safe_load(out.getvalue())["absorb"]["webhooks"]["secret"] == "***"


def test_webhooks_problems_are_named_where_they_are(tmp_path: Path) -> None:
    """No secret, a path that is no path, a bad listen address, and a port shared with
    http.listen are each a problem at its place."""
    data = base()
    data["absorb"]["webhooks"] = {"path": "absorb?x=1", "listen": "nowhere"}
    assert problems(tmp_path, data) == [
        "absorb.webhooks.listen: 'nowhere' is not a listen address: use HOST:PORT, like"
        " 127.0.0.1:9464",
        "absorb.webhooks.path: must be a URL path starting with / (no spaces, query or fragment)",
        "absorb.webhooks.secret: required (or secret_file: a file holding it)",
    ]
    data["absorb"]["webhooks"] = {"secret": "s", "listen": "0.0.0.0:9464"}
    assert problems(tmp_path, data) == [
        "absorb.webhooks.listen: port 9464 is http.listen's too: the webhook listener needs a"
        " port of its own, the only one to expose to Absorb"
    ]


# ---- check-config and config_path -----------------------------------------------------


def test_check_config_success(tmp_path: Path) -> None:
    """check-config prints the effective config as YAML, warnings to stderr, and returns 0."""
    data = base()
    data["sinks"].append({"name": "console", "type": "stdout"})
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(write(tmp_path, data)), {}, out, err) == 0
    shown = yaml.safe_load(out.getvalue())
    assert shown["feeds"][0]["interval"] == "30s"
    assert shown["feeds"][0]["lookback"] == "10m"
    assert shown["absorb"]["timeout"] == "30s"
    assert shown["absorb"]["password"] == "***"
    assert err.getvalue() == (
        "warning: sinks[1]: no route names sink 'console', so it receives no events\n"
    )


def test_check_config_failure(tmp_path: Path) -> None:
    """check-config prints a header and every problem indented on stderr, and returns 1."""
    data = base()
    data["absorb"]["page_size"] = 0
    data["routes"] = [{"sinks": ["nope"]}]
    path = write(tmp_path, data)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), {}, out, err) == 1
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        f"absorb-bridge check-config: 2 problems in {path}:",
        "  absorb.page_size: must be at least 1",
        "  routes[0].sinks: unknown sink 'nope' (sinks: audit)",
    ]


def test_check_config_finds_the_file_in_the_environment(tmp_path: Path) -> None:
    """Without --config, check-config reads ABSORB_BRIDGE_CONFIG; with neither: usage error."""
    path = write(tmp_path, base())
    out, err = io.StringIO(), io.StringIO()
    assert check_config(None, {"ABSORB_BRIDGE_CONFIG": str(path)}, out, err) == 0
    out, err = io.StringIO(), io.StringIO()
    assert check_config(None, {}, out, err) == 2
    assert err.getvalue() == (
        "absorb-bridge check-config: no config file: pass --config FILE or set"
        " ABSORB_BRIDGE_CONFIG\n"
    )


def test_config_path_prefers_the_command_line() -> None:
    """config_path takes --config over ABSORB_BRIDGE_CONFIG, and raises ConfigError for neither."""
    env = {"ABSORB_BRIDGE_CONFIG": "/etc/from-env.yaml"}
    assert config_path("cli.yaml", env) == Path("cli.yaml")
    assert config_path(None, env) == Path("/etc/from-env.yaml")
    with pytest.raises(ConfigError) as info:
        config_path(None, {})
    assert info.value.problems == ["no config file: pass --config FILE or set ABSORB_BRIDGE_CONFIG"]


def test_parse_config_and_model_validate_check_references() -> None:
    """parse_config reads YAML text; Config.model_validate alone still refuses unknown sinks."""
    config, _ = parse_config(yaml.safe_dump(base()), {})
    assert config.feed("courses").resource == "course_enrollments"
    data = base()
    data["routes"] = [{"sinks": ["nope"]}]
    with pytest.raises(ValueError, match="unknown sink 'nope'"):
        Config.model_validate(data)
