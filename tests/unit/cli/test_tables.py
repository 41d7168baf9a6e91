"""Tables fit the terminal: names and states whole, free text wrapped, the least useful columns
left out first; piped output keeps every column whole."""

from __future__ import annotations

import io

from rich.console import Console

from cli import render
from cli.fit import fit

GATEWAY_COLUMNS = render.parse_columns(
    [
        "BACKEND={backend}", "REGION={region}", "NAME={name}", "HOSTNAME={hostname}", "DOMAIN={domain}",
        "DEFAULT={default}", "STATUS={status}", "CREATED={created}", "ENVOYS={envoys}", "ERROR={error}",
    ]
)  # fmt: skip
SERVICE_COLUMNS = render.parse_columns(
    [
        "NAME={name}", "GATEWAY={gateway}", "URL={url}", "REPLICAS={replicas}", "STATUS={status}",
        "CREATED={created}", "CERTIFICATE={certificate}", "ERROR={error}",
    ]
)  # fmt: skip
GATEWAY = {
    "backend": "local",
    "region": "local",
    "name": "gatehouse-gateway-bright-puffin",
    "hostname": "127.0.0.2",
    "domain": "example.com",
    "default": "✓",
    "status": "provisioning",
    "created": "2026-01-01 00:00:00",
    "envoys": "1",
    "error": 'gateway "gw" refused listener port-5001: cannot bind 127.0.0.2:5001: Address already in use',
}
SERVICE = {
    "name": "service-with-a-long-name",
    "gateway": "gatehouse-gateway-bright-puffin",
    "url": "https://service-with-a-long-name.gateways.example.com",
    "replicas": "0/1",
    "status": "provisioning",
    "created": "2026-01-01 00:00:00",
    "certificate": "waiting for DNS: service-with-a-long-name.gateways.example.com",
    "error": "exited with code 1: python: can't open file 'app.py': [Errno 2] No such file or directory",
}


def _render(columns: list[tuple[str, str]], rows: list[dict[str, str]], width: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False, color_system=None)
    console.print(render.table(columns, rows, width=width))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def _whole(lines: list[str], *values: str) -> None:
    text = "\n".join(lines)
    for value in values:
        assert value in text, f"{value!r} cut in:\n{text}"


def test_gateway_list_at_80_columns_keeps_names_and_statuses_whole() -> None:
    lines = _render(GATEWAY_COLUMNS[:7], [GATEWAY], 80)
    assert all(len(line) <= 80 for line in lines), lines
    _whole(lines, GATEWAY["name"], "provisioning", "127.0.0.2", "example.com")
    assert lines[0].split() == ["NAME", "HOSTNAME", "DOMAIN", "DEFAULT", "STATUS"]


def test_verbose_gateway_list_wraps_the_error_and_leaves_out_the_least_useful() -> None:
    lines = _render(GATEWAY_COLUMNS, [GATEWAY], 80)
    assert all(len(line) <= 80 for line in lines), lines
    _whole(lines, GATEWAY["name"], "provisioning")
    assert "ERROR" in lines[0] and "CREATED" not in lines[0] and "REGION" not in lines[0]
    assert "Address already in use" in "\n".join(lines)  # wrapped, not cut


def test_verbose_service_list_keeps_name_at_80_columns() -> None:
    lines = _render(SERVICE_COLUMNS, [SERVICE], 80)
    assert all(len(line) <= 80 for line in lines), lines
    _whole(lines, SERVICE["name"], "provisioning")
    assert lines[0].split()[0] == "NAME"
    assert "…" not in "\n".join(lines)


def test_a_wide_terminal_shows_everything_on_one_line() -> None:
    lines = _render(SERVICE_COLUMNS, [SERVICE], 400)
    assert len(lines) == 2 and lines[0].split() == [header for header, _ in SERVICE_COLUMNS]
    _whole(lines, *SERVICE.values())


def test_urls_wrap_and_a_long_gateway_name_is_left_out_rather_than_cut() -> None:
    lines = _render(SERVICE_COLUMNS[:5], [SERVICE], 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["NAME", "URL", "REPLICAS", "STATUS"]
    assert len(lines) > 2 and "https://service-with" in lines[1] and "…" not in "\n".join(lines)
    short = {**SERVICE, "gateway": "local-gw"}
    assert _render(SERVICE_COLUMNS[:5], [short], 80)[0].split()[:3] == ["NAME", "GATEWAY", "URL"]


def test_fit_leaves_out_columns_least_useful_first() -> None:
    headers = ["BACKEND", "REGION", "NAME", "CREATED", "STATUS"]
    cells = [["kubernetes", "europe-west4", "n" * 30, "2026-01-01 00:00:00", "running"]]
    shown, widths = fit(headers, cells, 52)
    assert [headers[index] for index in shown] == ["BACKEND", "NAME", "STATUS"]
    assert widths[headers.index("NAME")] == 30
    # Nothing else fits: the names and states are still whole, wider than asked.
    shown, widths = fit(headers, cells, 10)
    assert [headers[index] for index in shown] == ["NAME", "STATUS"]


def test_piped_output_is_never_fitted() -> None:
    assert render.console.width >= 100_000 or render.console.is_terminal


def test_an_empty_column_goes_before_anything_wraps() -> None:
    service = {**SERVICE, "name": "a-service-with-a-rather-long-name", "url": "http://127.0.0.2:44359"}
    service |= {"error": "", "certificate": "", "status": "running"}
    lines = _render([SERVICE_COLUMNS[0], *SERVICE_COLUMNS[2:]], [service], 80)
    assert lines[0].split() == ["NAME", "URL", "REPLICAS", "STATUS"]
    assert len(lines) == 2 and "http://127.0.0.2:44359" in lines[1]
