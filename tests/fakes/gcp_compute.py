"""A wire-level fake of the Compute Engine REST API (v1) for google-cloud-compute: camelCase JSON,
operations that take several polls (and end in error when told to), 404/409 error bodies, a quota,
and OAuth for a service account (self-signed JWTs, or tokens from the fake's token endpoint).

It is as strict as Compute Engine on what Gatehouse sends (`gcp_rules`, each rule with its source):
names, label syntax, metadata sizes, required fields, machine types offered zone by zone, boot disk
types each machine series accepts (pd-standard when none is given), auto- and custom-mode networks
(a custom-mode network needs the interface's `subnetwork`), and `addresses.insert` dropping labels,
which only `setLabels` (with the current fingerprint) sets.

Instances carry `creationTimestamp` (RFC 3339 with an offset, as Compute Engine writes it), and
`instances.getSerialPortOutput` gives what a host printed (`consoles`, by zone and name): port 1 to
4, and at most the last 1 MB, "the oldest output is discarded" beyond that, with `start` the byte
offset returned (https://cloud.google.com/compute/docs/reference/rest/v1/instances/getSerialPortOutput)."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import gcp_rules
from tests.fakes.gcp_rules import error
from tests.fakes.jsonhttp import HttpError, Request, Response, Router, serving

BASE = "https://www.googleapis.com/compute/v1"
UBUNTU_PROJECT = "ubuntu-os-cloud"
# getSerialPortOutput: ports 1-4, and the last 1 MB of a port's output is kept.
SERIAL_PORTS = 4
SERIAL_OUTPUT_BYTES = 1024 * 1024
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential."
)


def _timestamp() -> str:
    """Now as Compute Engine writes it: RFC 3339, milliseconds, in the API's Pacific offset."""
    now = datetime.now(UTC).astimezone(timezone(timedelta(hours=-8)))
    return now.isoformat(timespec="milliseconds")


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def not_found(path: str) -> HttpError:
    return error(404, "notFound", f"The resource '{path}' was not found")


def _field(resource: dict[str, Any], dotted: str) -> Any:
    value: Any = resource
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


_TERM = re.compile(r'\(?\s*([\w.\-]+)\s*(=|!=|eq|ne)\s*"?([^")]*)"?\s*\)?')


def matches(resource: dict[str, Any], expression: str | None) -> bool:
    """Compute's list filters: `field = "value"`, `field != value`, `field eq "regex"`, `field ne regex`."""
    for name, operator, literal in _TERM.findall(expression or ""):
        value = _field(resource, name)
        text = "" if value is None else str(value)
        if operator == "=" and text != literal:
            return False
        if operator == "!=" and text == literal:
            return False
        if operator == "eq" and not re.fullmatch(literal, text):
            return False
        if operator == "ne" and re.fullmatch(literal, text):
            return False
    return True


@dataclass
class ServiceAccount:
    email: str
    key: rsa.RSAPrivateKey

    def info(self, token_uri: str, project: str) -> dict[str, str]:
        """The JSON key file Google issues for a service account."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem.decode(),
            "client_email": self.email,
            "client_id": "1234567890",
            "token_uri": token_uri,
            # A universe of its own, as a sovereign or private cloud has.
            "universe_domain": "gatehouse.test",
        }


@dataclass
class Operation:
    body: dict[str, Any]
    effect: Any = None
    polls: int = 0
    # Set by `fail_next`: the operation ends with this error instead of its effect.
    failure: dict[str, str] | None = None


@dataclass
class FakeCompute:
    project: str = "gatehouse-test"
    regions: dict[str, list[str]] = field(
        default_factory=lambda: {"europe-west4": ["a", "b", "c"], "us-central1": ["a", "b"]}
    )
    machine_types: dict[str, str] = field(
        default_factory=lambda: {
            "e2-small": "X86_64",
            "e2-medium": "X86_64",
            "n2-standard-4": "X86_64",
            "n4-standard-2": "X86_64",
            "c3-standard-4": "X86_64",
            "t2a-standard-1": "ARM64",
        }
    )
    # (machine type, zone) pairs a zone does not offer (machine types are offered zone by zone).
    not_offered: set[tuple[str, str]] = field(default_factory=set)
    instance_quota: int = 24
    # How many polls an operation stays RUNNING before it is DONE (real ones take seconds to minutes).
    operation_polls: int = 2
    account: ServiceAccount = field(
        default_factory=lambda: ServiceAccount(
            "gatehouse@gatehouse-test.iam.gserviceaccount.com", rsa.generate_private_key(65537, 2048)
        )
    )
    url: str = ""
    router: Router = field(default_factory=Router)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (zone, instance name) -> what the host printed on serial port 1.
    consoles: dict[tuple[str, str], str] = field(default_factory=dict)
    disks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    addresses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every project starts with the auto-mode network `default` (a subnetwork of that name per region).
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnetworks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Operation type (insert, delete, setLabels…) → the error the next such operation ends with.
    failures: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    operations: dict[str, Operation] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))
    ips: Iterator[ipaddress.IPv4Address] = field(
        default_factory=lambda: iter(ipaddress.IPv4Network("203.0.113.0/24").hosts())
    )
    private_ips: Iterator[ipaddress.IPv4Address] = field(
        default_factory=lambda: iter(ipaddress.IPv4Network("10.164.0.0/20").hosts())
    )

    def __post_init__(self) -> None:
        self.images = [
            self._image("ubuntu-2204-jammy-v20250110", "ubuntu-2204-lts", "X86_64"),
            self._image(
                "ubuntu-2404-noble-amd64-v20241001", "ubuntu-2404-lts-amd64", "X86_64", deprecated=True
            ),
            self._image("ubuntu-2404-noble-amd64-v20250115", "ubuntu-2404-lts-amd64", "X86_64"),
            self._image("ubuntu-2404-noble-arm64-v20250115", "ubuntu-2404-lts-arm64", "ARM64"),
            self._image("ubuntu-2410-oracular-amd64-v20250201", "ubuntu-2410-amd64", "X86_64"),
        ]
        self.add_network("default", auto=True)
        self._routes()

    def add_network(self, name: str, auto: bool = False, subnets: dict[str, str] | None = None) -> None:
        """A VPC network: auto mode (a subnetwork named like it in every region) or custom mode
        (only the `subnets` given, region → name)."""
        link = f"{BASE}/projects/{self.project}/global/networks/{name}"
        if auto:
            subnets = {region: name for region in self.regions}
        for number, (region, subnet) in enumerate(sorted((subnets or {}).items())):
            self.subnetworks[(region, subnet)] = {
                "kind": "compute#subnetwork",
                "name": subnet,
                "network": link,
                "region": f"{BASE}/projects/{self.project}/regions/{region}",
                "ipCidrRange": f"10.{128 + len(self.subnetworks) % 100}.{number}.0/24",
                "selfLink": f"{BASE}/projects/{self.project}/regions/{region}/subnetworks/{subnet}",
            }
        self.networks[name] = {
            "kind": "compute#network",
            "name": name,
            "autoCreateSubnetworks": auto,
            "selfLink": link,
            "subnetworks": [
                s["selfLink"] for (region, _), s in self.subnetworks.items() if s["network"] == link
            ],
        }

    def fail_next(self, operation_type: str, code: str, message: str) -> None:
        """The next operation of this type (insert, delete…) ends with this error, after its polls."""
        self.failures.setdefault(operation_type, []).append({"code": code, "message": message})

    @contextmanager
    def serve(self) -> Iterator[FakeCompute]:
        with serving(self.router) as url:
            self.url = url
            yield self

    def credentials_info(self, key: rsa.RSAPrivateKey | None = None) -> dict[str, str]:
        account = self.account if key is None else ServiceAccount(self.account.email, key)
        return account.info(f"{self.url}/token", self.project)

    # -- helpers ------------------------------------------------------------------------------

    def _image(self, name: str, family: str, architecture: str, deprecated: bool = False) -> dict[str, Any]:
        image: dict[str, Any] = {
            "kind": "compute#image",
            "name": name,
            "family": family,
            "architecture": architecture,
            "status": "READY",
            "selfLink": f"{BASE}/projects/{UBUNTU_PROJECT}/global/images/{name}",
            "creationTimestamp": "20" + name.rsplit("-v20", 1)[1][:2] + "-01-01T00:00:00.000-08:00",
        }
        if deprecated:
            image["deprecated"] = {"state": "DEPRECATED"}
        return image

    def _authorize(self, request: Request) -> None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.tokens or self._valid_jwt(token):
            return
        raise HttpError(
            401, {"error": {"code": 401, "message": UNAUTHENTICATED, "status": "UNAUTHENTICATED"}}
        )

    def _valid_jwt(self, token: str) -> bool:
        try:
            header, payload, signature = token.split(".")
            claims = json.loads(_b64url(payload))
            self.account.key.public_key().verify(
                _b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return False
        return bool(claims.get("iss") == self.account.email)

    def _operation(
        self, request: Request, scope: str, kind: str, target: str, effect: Any = None
    ) -> Response:
        if kind == "insert":
            for pending in self.operations.values():
                same = (
                    pending.body["targetLink"] == f"{BASE}/{target}" and pending.body["operationType"] == kind
                )
                if same and pending.body["status"] != "DONE":
                    raise error(409, "alreadyExists", f"The resource '{target}' already exists")
        name = f"operation-{next(self.ids)}-{secrets.token_hex(4)}"
        body = {
            "kind": "compute#operation",
            "id": str(next(self.ids)),
            "name": name,
            "operationType": kind,
            "targetLink": f"{BASE}/{target}",
            "status": "RUNNING",
            "progress": 0,
            "selfLink": f"{BASE}/projects/{self.project}/{scope}/operations/{name}",
        }
        if scope.startswith("zones/"):
            body["zone"] = f"{BASE}/projects/{self.project}/{scope}"
        elif scope.startswith("regions/"):
            body["region"] = f"{BASE}/projects/{self.project}/{scope}"
        queued = self.failures.get(kind)
        failure = queued.pop(0) if queued else None
        self.operations[name] = Operation(body, effect, failure=failure)
        return Response(200, body)

    def _poll(self, name: str) -> dict[str, Any]:
        operation = self.operations.get(name)
        if operation is None:
            raise not_found(f"projects/{self.project}/operations/{name}")
        operation.polls += 1
        if operation.body["status"] != "DONE" and operation.polls >= self.operation_polls:
            failure = operation.failure
            if failure is None and operation.effect is not None:
                failure = operation.effect()
            if failure is not None:
                operation.body["error"] = {"errors": [failure]}
            operation.body.update(status="DONE", progress=100)
        elif operation.body["status"] != "DONE":
            operation.body["progress"] = 50
        return operation.body

    def _zone_of(self, zone: str) -> str:
        region = zone.rsplit("-", 1)[0]
        if region not in self.regions or zone.rsplit("-", 1)[1] not in self.regions[region]:
            raise not_found(f"projects/{self.project}/zones/{zone}")
        return region

    def _network_of(self, field: str, link: str | None) -> dict[str, Any]:
        if not link:
            raise gcp_rules.required(field)
        name = link.rsplit("/", 1)[-1]
        if name not in self.networks:
            raise not_found(f"projects/{self.project}/global/networks/{name}")
        return self.networks[name]

    def _check_interface(self, field: str, nic: dict[str, Any], region: str) -> None:
        """A custom-mode network needs the interface's subnetwork, which must be in the instance's
        region and of that network."""
        network = self._network_of(f"{field}.network", nic.get("network"))
        subnet = nic.get("subnetwork")
        if not subnet:
            if not network["autoCreateSubnetworks"]:
                raise gcp_rules.invalid(
                    field, nic, "Subnetwork should be specified for custom subnetmode network"
                )
            return
        parts = subnet.split("/")
        if "regions" in parts and parts[parts.index("regions") + 1] != region:
            raise gcp_rules.invalid(
                f"{field}.subnetwork", subnet, "Subnetwork must be in the same region as the instance."
            )
        found = self.subnetworks.get((region, parts[-1]))
        if found is None:
            raise not_found(f"projects/{self.project}/regions/{region}/subnetworks/{parts[-1]}")
        if found["network"] != network["selfLink"]:
            raise gcp_rules.invalid(
                f"{field}.subnetwork", subnet, f"Subnetwork must belong to network '{network['name']}'."
            )

    def _disk_type(self, zone: str, link: str | None) -> str:
        if not link:
            return gcp_rules.DEFAULT_DISK_TYPE
        name = link.rsplit("/", 1)[-1]
        if name not in gcp_rules.DISK_TYPES or f"zones/{zone}/" not in link:
            raise not_found(f"projects/{self.project}/zones/{zone}/diskTypes/{name}")
        return name

    def _advance(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Every look at a booting instance moves it on: PROVISIONING → STAGING → RUNNING."""
        following = {"PROVISIONING": "STAGING", "STAGING": "RUNNING"}
        instance["status"] = following.get(instance["status"], instance["status"])
        return instance

    # -- routes -------------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.router
        p = "/compute/v1/projects/{project}"

        @r.route("POST", "/token")
        def token(request: Request) -> Response:
            if not self._valid_jwt(request.form.get("assertion", "")):
                return Response(
                    400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                )
            issued = secrets.token_urlsafe(24)
            self.tokens.add(issued)
            return Response(200, {"access_token": issued, "expires_in": 3600, "token_type": "Bearer"})

        @r.route("GET", p + "/regions/{region}")
        def get_region(request: Request) -> Response:
            self._authorize(request)
            region = request.params["region"]
            if region not in self.regions:
                raise not_found(f"projects/{self.project}/regions/{region}")
            zones = [f"{BASE}/projects/{self.project}/zones/{region}-{z}" for z in self.regions[region]]
            return Response(200, {"kind": "compute#region", "name": region, "status": "UP", "zones": zones})

        @r.route("GET", p + "/zones/{zone}/machineTypes/{type}")
        def get_machine_type(request: Request) -> Response:
            self._authorize(request)
            zone, name = request.params["zone"], request.params["type"]
            self._zone_of(zone)
            if name not in self.machine_types or (name, zone) in self.not_offered:
                raise not_found(f"projects/{self.project}/zones/{zone}/machineTypes/{name}")
            return Response(
                200,
                {
                    "kind": "compute#machineType",
                    "name": name,
                    "zone": zone,
                    "architecture": self.machine_types[name],
                },
            )

        @r.route("GET", "/compute/v1/projects/" + UBUNTU_PROJECT + "/global/images")
        def list_images(request: Request) -> Response:
            self._authorize(request)
            items = [image for image in self.images if matches(image, request.query.get("filter"))]
            return Response(200, {"kind": "compute#imageList", "items": items})

        @r.route("GET", "/compute/v1/projects/" + UBUNTU_PROJECT + "/global/images/family/{family}")
        def image_from_family(request: Request) -> Response:
            self._authorize(request)
            current = [
                image
                for image in self.images
                if image["family"] == request.params["family"] and "deprecated" not in image
            ]
            if not current:
                raise not_found(f"projects/{UBUNTU_PROJECT}/global/images/family/{request.params['family']}")
            return Response(200, max(current, key=lambda image: image["creationTimestamp"]))

        for scope in ("zones/{zone}", "regions/{region}", "global"):

            @r.route("GET", p + f"/{scope}/operations/{{operation}}")
            @r.route("POST", p + f"/{scope}/operations/{{operation}}/wait")
            def poll(request: Request) -> Response:
                self._authorize(request)
                return Response(200, self._poll(request.params["operation"]))

        # Networks (global) and their subnetworks (regional)
        @r.route("GET", p + "/global/networks/{name}")
        def get_network(request: Request) -> Response:
            self._authorize(request)
            found = self.networks.get(request.params["name"])
            if found is None:
                raise not_found(f"projects/{self.project}/global/networks/{request.params['name']}")
            return Response(200, found)

        @r.route("GET", p + "/regions/{region}/subnetworks/{name}")
        def get_subnetwork(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["region"], request.params["name"])
            if key not in self.subnetworks:
                raise not_found(f"projects/{self.project}/regions/{key[0]}/subnetworks/{key[1]}")
            return Response(200, self.subnetworks[key])

        # Firewalls (global)
        @r.route("GET", p + "/global/firewalls/{name}")
        def get_firewall(request: Request) -> Response:
            self._authorize(request)
            found = self.firewalls.get(request.params["name"])
            if found is None:
                raise not_found(f"projects/{self.project}/global/firewalls/{request.params['name']}")
            return Response(200, found)

        @r.route("POST", p + "/global/firewalls")
        def insert_firewall(request: Request) -> Response:
            self._authorize(request)
            body = request.body
            gcp_rules.check_name("resource.name", body.get("name"))
            self._network_of("resource.network", body.get("network"))
            if body["name"] in self.firewalls:
                raise error(
                    409,
                    "alreadyExists",
                    f"The resource 'projects/{self.project}/global/firewalls/{body['name']}' already exists",
                )
            body.update(
                kind="compute#firewall",
                id=str(next(self.ids)),
                selfLink=f"{BASE}/projects/{self.project}/global/firewalls/{body['name']}",
            )
            self.firewalls[body["name"]] = body
            return self._operation(
                request, "global", "insert", f"projects/{self.project}/global/firewalls/{body['name']}"
            )

        @r.route("PATCH", p + "/global/firewalls/{name}")
        def patch_firewall(request: Request) -> Response:
            self._authorize(request)
            name = request.params["name"]
            if name not in self.firewalls:
                raise not_found(f"projects/{self.project}/global/firewalls/{name}")
            self.firewalls[name].update(request.body)
            return self._operation(
                request, "global", "patch", f"projects/{self.project}/global/firewalls/{name}"
            )

        @r.route("DELETE", p + "/global/firewalls/{name}")
        def delete_firewall(request: Request) -> Response:
            self._authorize(request)
            name = request.params["name"]
            if name not in self.firewalls:
                raise not_found(f"projects/{self.project}/global/firewalls/{name}")
            return self._operation(
                request,
                "global",
                "delete",
                f"projects/{self.project}/global/firewalls/{name}",
                lambda: self.firewalls.pop(name) and None,
            )

        # Addresses (regional)
        @r.route("GET", p + "/regions/{region}/addresses")
        def list_addresses(request: Request) -> Response:
            self._authorize(request)
            region = request.params["region"]
            items = [
                a
                for (r_, _), a in self.addresses.items()
                if r_ == region and matches(a, request.query.get("filter"))
            ]
            return Response(200, {"kind": "compute#addressList", "items": items})

        @r.route("GET", p + "/regions/{region}/addresses/{name}")
        def get_address(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["region"], request.params["name"])
            if key not in self.addresses:
                raise not_found(f"projects/{self.project}/regions/{key[0]}/addresses/{key[1]}")
            return Response(200, self.addresses[key])

        @r.route("POST", p + "/regions/{region}/addresses")
        def insert_address(request: Request) -> Response:
            self._authorize(request)
            region = request.params["region"]
            if region not in self.regions:
                raise not_found(f"projects/{self.project}/regions/{region}")
            body = request.body
            gcp_rules.check_name("resource.name", body.get("name"))
            key = (region, body["name"])
            # Ignored on insert: "These can only be added or modified by the setLabels method."
            body.pop("labels", None)
            body["labelFingerprint"] = gcp_rules.label_fingerprint(None)
            if key in self.addresses:
                raise error(
                    409,
                    "alreadyExists",
                    f"The resource 'projects/{self.project}/regions/{region}/addresses/{body['name']}' "
                    "already exists",
                )
            link = f"projects/{self.project}/regions/{region}/addresses/{body['name']}"
            body.update(
                kind="compute#address",
                id=str(next(self.ids)),
                address=str(next(self.ips)),
                status="RESERVED",
                region=f"{BASE}/projects/{self.project}/regions/{region}",
                selfLink=f"{BASE}/{link}",
            )
            self.addresses[key] = body
            return self._operation(request, f"regions/{region}", "insert", link)

        @r.route("POST", p + "/regions/{region}/addresses/{name}/setLabels")
        def set_address_labels(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["region"], request.params["name"])
            link = f"projects/{self.project}/regions/{key[0]}/addresses/{key[1]}"
            address = self.addresses.get(key)
            if address is None:
                raise not_found(link)
            body = request.body or {}
            gcp_rules.check_labels("labels", body.get("labels"))
            gcp_rules.check_fingerprint(address, body.get("labelFingerprint"))
            labels = dict(body.get("labels") or {})

            def relabel() -> None:
                address["labels"] = labels
                address["labelFingerprint"] = gcp_rules.label_fingerprint(labels)

            return self._operation(request, f"regions/{key[0]}", "setLabels", link, relabel)

        @r.route("DELETE", p + "/regions/{region}/addresses/{name}")
        def delete_address(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["region"], request.params["name"])
            address = self.addresses.get(key)
            if address is None:
                raise not_found(f"projects/{self.project}/regions/{key[0]}/addresses/{key[1]}")

            def release() -> dict[str, str] | None:
                if address.get("status") == "IN_USE":
                    return {
                        "code": "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE",
                        "message": f"The address '{key[1]}' is in use",
                    }
                del self.addresses[key]
                return None

            return self._operation(
                request,
                f"regions/{key[0]}",
                "delete",
                f"projects/{self.project}/regions/{key[0]}/addresses/{key[1]}",
                release,
            )

        # Instances (zonal) and their boot disks
        @r.route("GET", p + "/aggregated/instances")
        def aggregated_instances(request: Request) -> Response:
            self._authorize(request)
            items: dict[str, dict[str, Any]] = {}
            for (zone, _), instance in self.instances.items():
                self._advance(instance)
                if matches(instance, request.query.get("filter")):
                    items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(instance)
            return Response(200, {"kind": "compute#instanceAggregatedList", "items": items})

        @r.route("GET", p + "/zones/{zone}/instances/{name}")
        def get_instance(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["zone"], request.params["name"])
            if key not in self.instances:
                raise not_found(f"projects/{self.project}/zones/{key[0]}/instances/{key[1]}")
            return Response(200, self._advance(self.instances[key]))

        @r.route("GET", p + "/zones/{zone}/instances/{name}/serialPort")
        def serial_port_output(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["zone"], request.params["name"])
            link = f"projects/{self.project}/zones/{key[0]}/instances/{key[1]}"
            if key not in self.instances:
                raise not_found(link)
            port = int(request.query.get("port", "1"))
            if not 1 <= port <= SERIAL_PORTS:
                raise error(400, "invalid", f"Invalid value for field 'port': '{port}'. Must be in [1, 4].")
            printed = self.consoles.get(key, "").encode() if port == 1 else b""
            first = max(0, len(printed) - SERIAL_OUTPUT_BYTES, int(request.query.get("start", "0")))
            return Response(
                200,
                {
                    "kind": "compute#serialPortOutput",
                    "contents": printed[first:].decode(errors="replace"),
                    "start": str(first),
                    "next": str(len(printed)),
                    "selfLink": f"{BASE}/{link}/serialPort?port={port}",
                },
            )

        @r.route("POST", p + "/zones/{zone}/instances")
        def insert_instance(request: Request) -> Response:
            self._authorize(request)
            zone = request.params["zone"]
            region = self._zone_of(zone)
            body = request.body
            gcp_rules.check_instance(body)
            key = (zone, body["name"])
            link = f"projects/{self.project}/zones/{zone}/instances/{body['name']}"
            if key in self.instances:
                raise error(409, "alreadyExists", f"The resource '{link}' already exists")
            machine_type = body["machineType"].rsplit("/", 1)[-1]
            if machine_type not in self.machine_types or (machine_type, zone) in self.not_offered:
                raise error(
                    400,
                    "invalid",
                    f"Invalid value for field 'resource.machineType': '{body['machineType']}'. "
                    f"Machine type with name '{machine_type}' does not exist in zone '{zone}'.",
                )
            boot = next(disk for disk in body["disks"] if disk.get("boot"))
            disk_type = self._disk_type(zone, boot["initializeParams"].get("diskType"))
            gcp_rules.check_disk_type(machine_type, disk_type)
            for number, nic in enumerate(body["networkInterfaces"]):
                self._check_interface(f"resource.networkInterfaces[{number}]", nic, region)
            image = boot["initializeParams"]["sourceImage"].rsplit("/", 1)[-1]
            if not any(known["name"] == image for known in self.images):
                raise error(
                    404,
                    "notFound",
                    f"The resource 'projects/{UBUNTU_PROJECT}/global/images/{image}' was not found",
                )
            in_region = [i for (z, _), i in self.instances.items() if z.startswith(region)]
            interface = body["networkInterfaces"][0]

            def create() -> dict[str, str] | None:
                if len(in_region) >= self.instance_quota:
                    return {
                        "code": "QUOTA_EXCEEDED",
                        "message": (
                            f"Quota 'INSTANCES' exceeded.  Limit: {self.instance_quota}.0 in region {region}."
                        ),
                    }
                for config in interface.get("accessConfigs", []):
                    if config.get("natIP"):
                        address = next(
                            (a for a in self.addresses.values() if a["address"] == config["natIP"]), None
                        )
                        if address is None or address["status"] == "IN_USE":
                            return {
                                "code": "IP_IN_USE_OR_UNKNOWN",
                                "message": f"The IP address {config['natIP']} is unavailable",
                            }
                        address.update(status="IN_USE", users=[f"{BASE}/{link}"])
                    else:
                        config["natIP"] = str(next(self.ips))
                interface.update(name="nic0", networkIP=str(next(self.private_ips)))
                disk_name = body["name"]
                self.disks[(zone, disk_name)] = {
                    "kind": "compute#disk",
                    "name": disk_name,
                    "sizeGb": str(boot["initializeParams"].get("diskSizeGb", "10")),
                    "type": f"{BASE}/projects/{self.project}/zones/{zone}/diskTypes/{disk_type}",
                    "sourceImage": boot["initializeParams"]["sourceImage"],
                    "labels": boot["initializeParams"].get("labels", {}),
                    "zone": f"{BASE}/projects/{self.project}/zones/{zone}",
                    "status": "READY",
                    "users": [f"{BASE}/{link}"],
                }
                body["disks"] = [
                    {
                        "boot": True,
                        "autoDelete": boot.get("autoDelete", False),
                        "deviceName": disk_name,
                        "source": f"{BASE}/projects/{self.project}/zones/{zone}/disks/{disk_name}",
                    }
                ]
                body.update(
                    kind="compute#instance",
                    id=str(next(self.ids)),
                    status="PROVISIONING",
                    creationTimestamp=_timestamp(),
                    zone=f"{BASE}/projects/{self.project}/zones/{zone}",
                    machineType=f"{BASE}/projects/{self.project}/zones/{zone}/machineTypes/{machine_type}",
                    selfLink=f"{BASE}/{link}",
                )
                self.instances[key] = body
                return None

            return self._operation(request, f"zones/{zone}", "insert", link, create)

        @r.route("DELETE", p + "/zones/{zone}/instances/{name}")
        def delete_instance(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["zone"], request.params["name"])
            link = f"projects/{self.project}/zones/{key[0]}/instances/{key[1]}"
            instance = self.instances.get(key)
            if instance is None:
                raise not_found(link)
            instance["status"] = "STOPPING"

            def remove() -> None:
                del self.instances[key]
                for config in instance["networkInterfaces"][0].get("accessConfigs", []):
                    for address in self.addresses.values():
                        if address["address"] == config.get("natIP"):
                            address.update(status="RESERVED", users=[])
                for disk in instance["disks"]:
                    disk_key = (key[0], disk["source"].rsplit("/", 1)[-1])
                    if disk.get("autoDelete"):
                        self.disks.pop(disk_key, None)
                    elif disk_key in self.disks:
                        self.disks[disk_key]["users"] = []

            return self._operation(request, f"zones/{key[0]}", "delete", link, remove)

        @r.route("GET", p + "/aggregated/disks")
        def aggregated_disks(request: Request) -> Response:
            self._authorize(request)
            items: dict[str, dict[str, Any]] = {}
            for (zone, _), disk in self.disks.items():
                if matches(disk, request.query.get("filter")):
                    items.setdefault(f"zones/{zone}", {"disks": []})["disks"].append(disk)
            return Response(200, {"kind": "compute#diskAggregatedList", "items": items})

        @r.route("DELETE", p + "/zones/{zone}/disks/{name}")
        def delete_disk(request: Request) -> Response:
            self._authorize(request)
            key = (request.params["zone"], request.params["name"])
            if key not in self.disks:
                raise not_found(f"projects/{self.project}/zones/{key[0]}/disks/{key[1]}")
            return self._operation(
                request,
                f"zones/{key[0]}",
                "delete",
                f"projects/{self.project}/zones/{key[0]}/disks/{key[1]}",
                lambda: self.disks.pop(key) and None,
            )

    def inventory(self) -> dict[str, set[str]]:
        return {
            "instances": {name for _, name in self.instances},
            "disks": {name for _, name in self.disks},
            "addresses": {name for _, name in self.addresses},
            "firewalls": set(self.firewalls),
        }
