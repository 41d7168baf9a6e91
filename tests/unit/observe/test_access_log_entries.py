"""What an access log keeps of a request (no header, query values redacted), sampling under load,
and the registry's bounded store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from gatehouse import access_logs
from gatehouse.gateway_resources import backend_name, service_of_backend
from gatehouse.v1 import registry_pb2
from gateway_xds.observe.access_logs import AccessLogOutbox
from services.registry.access_logs import MAX_SERVICES, AccessLogStore, line


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/a", "/a"),
        ("/a?token=s3cret", "/a?token=REDACTED"),
        ("/a?token=s3cret&x=1&x=2", "/a?token=REDACTED&x=REDACTED&x=REDACTED"),
        ("/a?s3cret", "/a?s3cret=REDACTED"),
        ("/a?", "/a"),
        ("/a?%3D%3D=v", "/a?%3D%3D=REDACTED"),
        ("/a?x=1#frag=s3cret", "/a?x=REDACTED"),
    ],
)
def test_query_values_never_survive(path: str, kept: str) -> None:
    assert access_logs.redacted_path(path) == kept
    assert "s3cret" not in access_logs.redacted_path(path).split("?", 1)[-1].replace("s3cret=REDACTED", "")


def test_a_long_path_is_cut() -> None:
    assert len(access_logs.redacted_path("/" + "a" * 10_000)) == access_logs.MAX_PATH_CHARS


def _log_entry(route: str, path: str = "/p?k=v", status: int = 201) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.route_name = route
    entry.request.request_method = base_pb2.POST
    entry.request.path = path
    entry.request.request_headers["authorization"] = "Bearer gh_secret"
    entry.response.response_code.value = status
    return entry


def test_errors_have_their_own_allowance_and_sampled_successes_say_so() -> None:
    outbox = AccessLogOutbox(per_second=2, clock=lambda: 100.0)
    for _ in range(5):
        outbox.add("g1", _log_entry("svc_a_web", "/ok"), success_percent=2.5)
    outbox.add("g1", _log_entry("svc_a_web", "/gone", status=404), success_percent=2.5)
    outbox.add("g1", _log_entry("svc_a_web", "/all", status=200), success_percent=100.0)
    entries = outbox.take()["g1"]
    assert [(e.path, e.status) for e in entries] == [("/ok", 201), ("/ok", 201), ("/gone", 404)]
    success, _, error = (line(entry) for entry in entries)
    assert success.endswith(" sampled=2.5%") and "sampled" not in error
    outbox = AccessLogOutbox(per_second=5, clock=lambda: 100.0)
    outbox.add("g1", _log_entry("svc_a_web", "/all", status=200), success_percent=100.0)
    outbox.add("g1", _log_entry("svc_a_web", "/unknown", status=200), success_percent=None)
    assert not any(entry.HasField("successes_logged_percent") for entry in outbox.take()["g1"])


def test_under_load_each_service_keeps_its_share_and_counts_the_rest(tmp_path: Path) -> None:
    now = [100.0]
    outbox = AccessLogOutbox(per_second=3, clock=lambda: now[0], file=tmp_path / "logs" / "access.jsonl")
    for _ in range(10):
        outbox.add("g1", _log_entry("svc_a_web"))
        outbox.add("g1", _log_entry("svc_b_web"))
    outbox.add("g1", _log_entry(""))  # matched no service
    now[0] = 101.0
    outbox.add("g1", _log_entry("svc_a_web"))
    batches = outbox.take()
    entries = batches["g1"]
    assert [e.backend for e in entries].count("svc_a_web") == 4
    assert [e.backend for e in entries].count("svc_b_web") == 3
    assert entries[-1].skipped == 7
    assert entries[0].method == "POST" and entries[0].path == "/p?k=REDACTED" and entries[0].status == 201
    assert "gh_secret" not in str(entries)
    (tmp_path / "logs").mkdir()
    outbox._append_to_file("g1", entries)
    written = (tmp_path / "logs" / "access.jsonl").read_text().splitlines()
    assert len(written) == len(entries) and json.loads(written[0])["path"] == "/p?k=REDACTED"
    assert stat.S_IMODE(os.stat(tmp_path / "logs" / "access.jsonl").st_mode) == 0o600


def test_the_store_keeps_the_newest_of_a_bounded_number_of_services() -> None:
    store = AccessLogStore()
    entry = registry_pb2.AccessLogEntry(method="GET", path="/", status=200)
    store.add("s1", [entry] * (access_logs.KEPT_PER_SERVICE + 10))
    shown, cursor = store.read("s1", tail=5)
    assert len(shown) == 5
    assert store.read("s1", after=cursor) == ([], cursor)
    store.add("s1", [registry_pb2.AccessLogEntry(path="/new")])
    newer, _ = store.read("s1", after=cursor)
    assert [e.path for e in newer] == ["/new"]
    assert len(store.read("s1", tail=100_000)[0]) == access_logs.KEPT_PER_SERVICE
    for index in range(MAX_SERVICES + 5):
        store.add(f"other-{index}", [entry])
    assert store.read("s1")[0] == []
    assert "GET / 200" in line(entry)


@pytest.mark.parametrize(("project", "service"), [("main", "web"), ("a-b", "c-d")])
def test_a_backend_name_reads_back(project: str, service: str) -> None:
    assert service_of_backend(backend_name(project, service)) == (project, service)


@pytest.mark.parametrize("name", ["", "svc", "svc_", "svc_main", "svc__web", "cluster_a_b", "svc_a_b_c"])
def test_anything_else_is_no_service(name: str) -> None:
    assert service_of_backend(name) is None
