"""A wire-level fake of Azure Resource Manager (resource groups, Microsoft.Network, Microsoft.Compute)
and of the Microsoft identity platform's token endpoint, served over TLS as the SDKs require.

Writes answer like ARM: 201/200 with `provisioningState` and an `Azure-AsyncOperation` to poll,
deletes 202 with a `Location`; an operation finishes once `operation_ticks` more requests have
arrived (any request: time passes whether or not anyone polls). Error bodies are ARM's `{"error":
{code, message}}`; references between resources are checked, as are resources still in use.

As strict as ARM on what Gatehouse sends (`azure_rules`, each rule with its source): names, tags,
custom data size, required VM fields, sizes from the Resource SKUs API (restricted ones refused,
architecture and Hyper-V generation checked against the image), cores per family against the quota.
A VM can be made to end `Failed` (`fail_next_vm`), or be stopped or deallocated (`set_power`), and
its instance view says so, as Azure's does; a VM list takes `$expand=instanceView` only with a
`$filter`, as the API documents. A VM has `timeCreated` (read-only, set when it is made), and
`retrieveBootDiagnosticsData` gives SAS URIs to its screenshot and serial log (`consoles`, what the
host printed, by VM name) only when boot diagnostics are on; the log blob is read with the SAS alone
(https://learn.microsoft.com/en-us/rest/api/compute/virtual-machines/retrieve-boot-diagnostics-data)."""

# ruff: noqa: E501 - error messages are Azure's, verbatim

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes import azure_rules
from tests.fakes.azure_rules import SIZES, VmSize, arm_error
from tests.fakes.jsonhttp import Request, Response, Router, serving
from tests.fakes.tls import loopback_tls

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
TENANT = "00000000-0000-0000-0000-0000000000bb"
CLIENT_ID = "00000000-0000-0000-0000-0000000000cc"
CLIENT_SECRET = "gatehouse-test-secret"
# Poll again at once (azure-core reads a zero `Retry-After` as "not given" and waits 30 s).
NO_DELAY = {"x-ms-retry-after-ms": "10"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass
class FakeAzure:
    locations: tuple[str, ...] = ("westeurope", "eastus")
    sizes: dict[str, VmSize] = field(default_factory=lambda: dict(SIZES))
    # (size, location) pairs not available to this subscription (a `NotAvailableForSubscription` restriction).
    restricted: set[tuple[str, str]] = field(default_factory=set)
    # Cores per size family (ARM's "standardBSFamily Cores quota").
    core_quota: int = 20
    operation_ticks: int = 2
    # (code, message) the next VMs asked for end `Failed` with, in turn.
    vm_failures: list[tuple[str, str]] = field(default_factory=list)
    # VM name (lowercase) → its power state once provisioned: running, stopped, deallocated…
    power: dict[str, str] = field(default_factory=dict)
    failed_vms: dict[str, dict[str, str]] = field(default_factory=dict)
    url: str = ""
    ca_file: Path | None = None
    router: Router = field(default_factory=Router)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_data: dict[str, str] = field(default_factory=dict)
    # VM name (lowercase) → what the host printed on its serial console (boot diagnostics).
    consoles: dict[str, str] = field(default_factory=dict)
    sas: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    pending: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    operations: dict[str, str] = field(default_factory=dict)
    operation_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    ips: Iterator[ipaddress.IPv4Address] = field(
        default_factory=lambda: iter(ipaddress.IPv4Network("198.51.100.0/24").hosts())
    )
    private_ips: Iterator[ipaddress.IPv4Address] = field(
        default_factory=lambda: itertools.islice(ipaddress.IPv4Network("10.0.0.0/24").hosts(), 3, None)
    )

    def __post_init__(self) -> None:
        self.router.before_each = lambda request: self._tick()
        self._routes()

    @contextmanager
    def serve(self, directory: Path) -> Iterator[FakeAzure]:
        context, self.ca_file = loopback_tls(directory)
        with serving(self.router, context) as url:
            self.url = url
            yield self

    # -- time, operations, auth ---------------------------------------------------------------

    def _tick(self) -> None:
        pending, self.pending = self.pending, []
        for left, finish in pending:
            if left <= 1:
                finish()
            else:
                self.pending.append((left - 1, finish))

    def _later(self, finish: Callable[[], None]) -> None:
        self.pending.append((self.operation_ticks, finish))

    def fail_next_vm(self, code: str, message: str) -> None:
        """The next VM asked for is accepted, then ends `Failed` with this error (as an allocation
        failure or an image that cannot boot does)."""
        self.vm_failures.append((code, message))

    def set_power(self, name: str, state: str) -> None:
        """Stops (`stopped`) or deallocates (`deallocated`) a VM outside Gatehouse, as its owner might."""
        self.power[name.lower()] = state

    def instance_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        """What `instanceView` reports: the provisioning state, and the power state once provisioned."""
        state = vm["properties"]["provisioningState"]
        failure = self.failed_vms.get(vm["name"].lower())
        if failure is not None:
            statuses = [
                {
                    "code": f"ProvisioningState/failed/{failure['code']}",
                    "level": "Error",
                    "displayStatus": "Provisioning failed",
                    "message": failure["message"],
                    "time": failure["time"],
                }
            ]
        else:
            statuses = [{"code": f"ProvisioningState/{state.lower()}", "level": "Info"}]
        if state == "Succeeded":
            power = self.power.setdefault(vm["name"].lower(), "running")
            statuses.append({"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"})
        return {"computerName": vm["name"], "statuses": statuses}

    def _operation(
        self,
        namespace: str,
        location: str,
        finish: Callable[[], None],
        failure: dict[str, str] | None = None,
    ) -> dict[str, str]:
        operation = str(uuid.uuid4())
        self.operations[operation] = "InProgress"

        def done() -> None:
            finish()
            self.operations[operation] = "Failed" if failure else "Succeeded"
            if failure:
                self.operation_errors[operation] = failure

        self._later(done)
        link = f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/{namespace}/locations/{location}/operations/{operation}"
        return {"Azure-AsyncOperation": f"{link}?api-version=2024-01-01", **NO_DELAY}

    def _authorize(self, request: Request) -> None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            raise arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def _subscription(self, request: Request) -> None:
        self._authorize(request)
        if request.params["sub"] != SUBSCRIPTION:
            raise arm_error(
                404, "SubscriptionNotFound", f"The subscription '{request.params['sub']}' could not be found."
            )

    # -- resources ----------------------------------------------------------------------------

    @staticmethod
    def _key(path: str) -> str:
        return path.lower()

    def _get(self, resource_id: str) -> dict[str, Any]:
        found = self.resources.get(self._key(resource_id))
        if found is None:
            raise arm_error(
                400,
                "InvalidResourceReference",
                f"Resource {resource_id} referenced by resource was not found.",
            )
        return found

    def _users(self, resource_id: str) -> list[str]:
        """Resources whose body refers to `resource_id`."""
        needle = resource_id.lower()
        return [
            other["id"]
            for key, other in self.resources.items()
            if key != needle and needle in str(other.get("properties", {})).lower()
        ]

    def _validate(self, kind: str, body: dict[str, Any]) -> None:
        properties = body.get("properties", {})
        if kind == "microsoft.network/networkinterfaces":
            for config in properties.get("ipConfigurations", []):
                self._get(config["properties"]["subnet"]["id"])
                if "publicIPAddress" in config["properties"]:
                    self._get(config["properties"]["publicIPAddress"]["id"])
            if "networkSecurityGroup" in properties:
                self._get(properties["networkSecurityGroup"]["id"])
        if kind == "microsoft.compute/virtualmachines":
            size_name = (properties.get("hardwareProfile") or {}).get("vmSize")
            if size_name not in self.sizes or (size_name, body.get("location")) in self.restricted:
                raise arm_error(
                    409,
                    "SkuNotAvailable",
                    f"The requested VM size {size_name} is not available in the current region.",
                )
            size = azure_rules.check_vm(body, self.sizes)
            for reference in properties["networkProfile"]["networkInterfaces"]:
                self._get(reference["id"])
            used = sum(
                self.sizes[vm["properties"]["hardwareProfile"]["vmSize"]].vcpus
                for vm in self.resources.values()
                if vm["type"] == "Microsoft.Compute/virtualMachines"
                and vm["name"] != body["name"]
                and self.sizes[vm["properties"]["hardwareProfile"]["vmSize"]].family == size.family
            )
            if used + size.vcpus > self.core_quota:
                raise arm_error(
                    409,
                    "OperationNotAllowed",
                    f"Operation could not be completed as it results in exceeding approved {size.family} Cores "
                    f"quota. Location: {body['location']}, Current Limit: {self.core_quota}, Current Usage: {used}, "
                    f"Additional Required: {size.vcpus}.",
                )

    def _accept(
        self, resource_id: str, kind: str, body: dict[str, Any], group: dict[str, Any]
    ) -> dict[str, Any]:
        """What ARM does with a PUT body: fills in ids and read-only properties."""
        properties = body.setdefault("properties", {})
        if kind == "microsoft.network/publicipaddresses":
            previous = self.resources.get(self._key(resource_id), {}).get("properties", {})
            properties["ipAddress"] = previous.get("ipAddress") or str(next(self.ips))
        if kind == "microsoft.network/networkinterfaces":
            previous = self.resources.get(self._key(resource_id), {}).get("properties", {})
            for index, config in enumerate(properties.get("ipConfigurations", [])):
                old = previous.get("ipConfigurations", [{}] * (index + 1))[index].get("properties", {})
                config["properties"]["privateIPAddress"] = old.get("privateIPAddress") or str(
                    next(self.private_ips)
                )
                config.setdefault("id", f"{resource_id}/ipConfigurations/{config['name']}")
        if kind == "microsoft.network/virtualnetworks":
            for subnet in properties.get("subnets", []):
                subnet_id = f"{resource_id}/subnets/{subnet['name']}"
                subnet["id"] = subnet_id
                self.resources[self._key(subnet_id)] = {
                    "id": subnet_id,
                    "name": subnet["name"],
                    "type": "Microsoft.Network/virtualNetworks/subnets",
                    "properties": {**subnet.get("properties", {}), "provisioningState": "Succeeded"},
                }
        if kind == "microsoft.compute/virtualmachines":
            os_profile = properties.get("osProfile", {})
            if "customData" in os_profile:
                self.custom_data[body["name"]] = base64.b64decode(os_profile.pop("customData")).decode()
            disk = properties["storageProfile"]["osDisk"]
            disk_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group['name']}/providers/Microsoft.Compute/disks/{disk['name']}"
            disk.setdefault("managedDisk", {})["id"] = disk_id
            self.resources[self._key(disk_id)] = {
                "id": disk_id,
                "name": disk["name"],
                "type": "Microsoft.Compute/disks",
                "location": body["location"],
                "tags": {},
                "properties": {"provisioningState": "Succeeded", "diskState": "Attached"},
            }
            previous = self.resources.get(self._key(resource_id), {}).get("properties", {})
            properties["vmId"] = previous.get("vmId") or str(uuid.uuid4())
            properties["timeCreated"] = previous.get("timeCreated") or _now()
        return body

    def _delete_cascade(self, resource: dict[str, Any]) -> None:
        """A VM takes the NIC and OS disk marked `deleteOption: Delete` with it."""
        self.resources.pop(self._key(resource["id"]), None)
        if resource["type"] != "Microsoft.Compute/virtualMachines":
            return
        properties = resource["properties"]
        disk = properties["storageProfile"]["osDisk"]
        if disk.get("deleteOption") == "Delete":
            self.resources.pop(self._key(disk["managedDisk"]["id"]), None)
        else:
            self.resources[self._key(disk["managedDisk"]["id"])]["properties"]["diskState"] = "Unattached"
        for reference in properties["networkProfile"]["networkInterfaces"]:
            if reference.get("properties", {}).get("deleteOption") == "Delete":
                self.resources.pop(self._key(reference["id"]), None)

    def inventory(self) -> dict[str, set[str]]:
        kinds: dict[str, set[str]] = {"resource groups": set(self.groups)}
        for resource in self.resources.values():
            kinds.setdefault(resource["type"], set()).add(resource["name"])
        return kinds

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [resource for resource in self.resources.values() if resource["type"].lower() == kind.lower()]

    # -- routes -------------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.router

        @r.route("GET", "/{tenant}/v2.0/.well-known/openid-configuration")
        def openid(request: Request) -> Response:
            tenant = request.params["tenant"]
            base = f"{self.url}/{tenant}"
            return Response(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )

        @r.route("POST", "/{tenant}/oauth2/v2.0/token")
        def token(request: Request) -> Response:
            form = request.form
            if request.params["tenant"] != TENANT:
                return Response(
                    400,
                    {
                        "error": "invalid_tenant",
                        "error_description": f"AADSTS90002: Tenant '{request.params['tenant']}' not found.",
                    },
                )
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return Response(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": (
                            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                            f"request is the client secret value, not the client secret ID, for a secret added to app '{form.get('client_id')}'."
                        ),
                        "error_codes": [7000215],
                    },
                )
            issued = secrets.token_urlsafe(24)
            self.tokens.add(issued)
            return Response(
                200,
                {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": issued},
            )

        @r.route(
            "GET", "/subscriptions/{sub}/providers/{namespace}/locations/{location}/operations/{operation}"
        )
        def operation(request: Request) -> Response:
            self._subscription(request)
            status = self.operations.get(request.params["operation"])
            if status is None:
                raise arm_error(404, "NotFound", "Operation not found")
            body: dict[str, Any] = {"status": status}
            if request.params["operation"] in self.operation_errors:
                body["error"] = self.operation_errors[request.params["operation"]]
            return Response(200, body, dict(NO_DELAY))

        @r.route("GET", "/subscriptions/{sub}/operationresults/{operation}")
        def operation_result(request: Request) -> Response:
            self._subscription(request)
            if self.operations.get(request.params["operation"]) != "Succeeded":
                return Response(202, None, {"Location": f"{self.url}{request.path}", **NO_DELAY})
            return Response(200, None)

        @r.route("GET", "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/vmSizes")
        def vm_sizes(request: Request) -> Response:
            self._subscription(request)
            if request.params["location"] not in self.locations:
                raise arm_error(
                    404,
                    "NoRegisteredProviderFound",
                    f"No registered resource provider found for location '{request.params['location']}'.",
                )
            sizes = [
                {
                    "name": size,
                    "numberOfCores": 1,
                    "memoryInMB": 1024,
                    "maxDataDiskCount": 2,
                    "osDiskSizeInMB": 1047552,
                    "resourceDiskSizeInMB": 4096,
                }
                for size in self.sizes
                if (size, request.params["location"]) not in self.restricted
            ]
            return Response(200, {"value": sizes})

        @r.route("GET", "/subscriptions/{sub}/providers/Microsoft.Compute/skus")
        def resource_skus(request: Request) -> Response:
            self._subscription(request)
            wanted = request.query.get("$filter", "")
            match = re.fullmatch(r"location eq '([^']*)'", wanted.strip()) if wanted else None
            if wanted and match is None:
                # "Only location filter is supported currently."
                raise arm_error(400, "InvalidFilter", f"The filter '{wanted}' is not supported.")
            locations = [match.group(1)] if match else list(self.locations)
            skus = [
                size.sku(location, (size.name, location) in self.restricted)
                for location in locations
                if location in self.locations
                for size in self.sizes.values()
            ]
            return Response(200, {"value": skus})

        offers_path = "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/publishers/{publisher}/artifacttypes/vmimage/offers"

        @r.route("GET", offers_path)
        def offers(request: Request) -> Response:
            self._subscription(request)
            names = [
                "0001-com-ubuntu-server-jammy",
                "ubuntu-22_04-lts",
                "ubuntu-24_04-lts",
                "ubuntu-24_10",
                "ubuntu-25_04",
            ]
            location = request.params["location"]
            return Response(
                200,
                [
                    {
                        "name": name,
                        "location": location,
                        "id": f"/Subscriptions/{SUBSCRIPTION}/Providers/Microsoft.Compute/Locations/{location}/Publishers/Canonical/ArtifactTypes/VMImage/Offers/{name}",
                    }
                    for name in names
                ],
            )

        @r.route("GET", offers_path + "/{offer}/skus")
        def skus(request: Request) -> Response:
            self._subscription(request)
            location = request.params["location"]
            return Response(
                200,
                [
                    {"name": name, "location": location, "id": f"/Subscriptions/{SUBSCRIPTION}/skus/{name}"}
                    for name in ("server", "server-arm64", "minimal")
                ],
            )

        group_path = "/subscriptions/{sub}/resourcegroups/{group}"

        @r.route("PUT", group_path)
        def put_group(request: Request) -> Response:
            self._subscription(request)
            body = request.body
            name = request.params["group"]
            azure_rules.check_group_name(name)
            azure_rules.check_tags(body.get("tags"))
            if body["location"] not in self.locations:
                raise arm_error(
                    400,
                    "LocationNotAvailableForResourceGroup",
                    f"The provided location '{body['location']}' is not available for resource group. List of available regions is '{','.join(self.locations)}'.",
                )
            existing = self.groups.get(name.lower())
            if existing is not None and existing["properties"]["provisioningState"] == "Deleting":
                raise arm_error(
                    409,
                    "ResourceGroupBeingDeleted",
                    f"The resource group '{name}' is in deprovisioning state and cannot perform this operation.",
                )
            group = {
                "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}",
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": body["location"],
                "tags": body.get("tags", {}),
                "properties": {"provisioningState": "Succeeded"},
            }
            self.groups[name.lower()] = group
            return Response(201 if existing is None else 200, group)

        @r.route("GET", group_path)
        def get_group(request: Request) -> Response:
            self._subscription(request)
            group = self.groups.get(request.params["group"].lower())
            if group is None:
                raise arm_error(
                    404,
                    "ResourceGroupNotFound",
                    f"Resource group '{request.params['group']}' could not be found.",
                )
            return Response(200, group)

        @r.route("DELETE", group_path)
        def delete_group(request: Request) -> Response:
            self._subscription(request)
            name = request.params["group"].lower()
            group = self.groups.get(name)
            if group is None:
                return Response(204, None)
            group["properties"]["provisioningState"] = "Deleting"
            prefix = f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{name}/".lower()

            def remove() -> None:
                self.groups.pop(name, None)
                for key in [key for key in self.resources if key.startswith(prefix)]:
                    del self.resources[key]

            operation = str(uuid.uuid4())
            self.operations[operation] = "InProgress"

            def done() -> None:
                remove()
                self.operations[operation] = "Succeeded"

            self._later(done)
            location = (
                f"{self.url}/subscriptions/{SUBSCRIPTION}/operationresults/{operation}?api-version=2024-01-01"
            )
            return Response(202, None, {"Location": location, **NO_DELAY})

        resource_path = "/subscriptions/{sub}/resourceGroups/{group}/providers/{namespace}/{kind}/{name}"
        collection_path = "/subscriptions/{sub}/resourceGroups/{group}/providers/{namespace}/{kind}"

        def resource_id(request: Request) -> tuple[str, str]:
            p = request.params
            kind = f"{p['namespace']}/{p['kind']}"
            return (
                f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{p['group']}/providers/{kind}/{p['name']}",
                kind,
            )

        def group_of(request: Request) -> dict[str, Any]:
            self._subscription(request)
            group = self.groups.get(request.params["group"].lower())
            if group is None or group["properties"]["provisioningState"] == "Deleting":
                raise arm_error(
                    404,
                    "ResourceGroupNotFound",
                    f"Resource group '{request.params['group']}' could not be found.",
                )
            return group

        @r.route("PUT", resource_path)
        def put_resource(request: Request) -> Response:
            group = group_of(request)
            rid, kind = resource_id(request)
            body = request.body
            body.update(id=rid, name=request.params["name"], type=kind)
            azure_rules.check_name(kind.lower(), request.params["name"])
            azure_rules.check_tags(body.get("tags"))
            self._validate(kind.lower(), body)
            existing = self.resources.get(self._key(rid))
            body = self._accept(rid, kind.lower(), body, group)
            body["properties"]["provisioningState"] = "Creating" if existing is None else "Updating"
            self.resources[self._key(rid)] = body
            failure = None
            if kind.lower() == "microsoft.compute/virtualmachines" and self.vm_failures:
                code, message = self.vm_failures.pop(0)
                failure = {"code": code, "message": message}

            if existing is None:
                self.power.pop(body["name"].lower(), None)

            def finish() -> None:
                if failure is None:
                    self.failed_vms.pop(body["name"].lower(), None)
                    body["properties"]["provisioningState"] = "Succeeded"
                    return
                body["properties"]["provisioningState"] = "Failed"
                self.failed_vms[body["name"].lower()] = {**failure, "time": _now()}

            headers = self._operation(
                request.params["namespace"], body.get("location", group["location"]), finish, failure
            )
            return Response(201 if existing is None else 200, body, headers)

        def virtual_machine(request: Request) -> dict[str, Any]:
            """The VM the path names; ARM's 404 when there is none."""
            group_of(request)
            rid, _ = resource_id(request)
            found = self.resources.get(self._key(rid))
            if found is None or found["type"] != "Microsoft.Compute/virtualMachines":
                raise arm_error(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.Compute/virtualMachines/{request.params['name']}' under resource group '{request.params['group']}' was not found.",
                )
            return found

        @r.route("GET", resource_path + "/instanceView")
        def get_instance_view(request: Request) -> Response:
            found = virtual_machine(request)
            return Response(200, self.instance_view(found))

        @r.route("POST", resource_path + "/retrieveBootDiagnosticsData")
        def retrieve_boot_diagnostics_data(request: Request) -> Response:
            found = virtual_machine(request)
            diagnostics = found["properties"].get("diagnosticsProfile", {}).get("bootDiagnostics", {})
            if not diagnostics.get("enabled"):
                # Azure refuses it for a VM without boot diagnostics (the code here is not documented).
                raise arm_error(
                    409,
                    "OperationNotAllowed",
                    f"Boot diagnostics are not enabled for the virtual machine '{found['name']}'.",
                )
            vm_id = found["properties"]["vmId"]
            signature = self.sas.setdefault(vm_id, secrets.token_urlsafe(16))
            expiry = request.query.get("sasUriExpirationTimeInMinutes", "120")
            blob = f"{self.url}/bootdiagnostics/{vm_id}"
            query = f"sv=2022-11-02&se={expiry}m&sr=b&sp=r&sig={signature}"
            return Response(
                200,
                {
                    "consoleScreenshotBlobUri": f"{blob}/{found['name']}.screenshot.bmp?{query}",
                    "serialConsoleLogBlobUri": f"{blob}/{found['name']}.serialconsole.log?{query}",
                },
            )

        @r.route("GET", "/bootdiagnostics/{vm_id}/{blob}")
        def boot_diagnostics_blob(request: Request) -> Response:
            vm_id, blob = request.params["vm_id"], request.params["blob"]
            if "authorization" in request.headers or request.query.get("sig") != self.sas.get(vm_id):
                return Response(403, b"AuthenticationFailed", content_type="application/xml")
            vm = next(
                (
                    v
                    for v in self.of_type("Microsoft.Compute/virtualMachines")
                    if v["properties"]["vmId"] == vm_id
                ),
                None,
            )
            if (
                vm is None
                or not blob.endswith(".serialconsole.log")
                or vm["name"].lower() not in self.consoles
            ):
                return Response(404, b"BlobNotFound", content_type="application/xml")
            return Response(200, self.consoles[vm["name"].lower()].encode(), content_type="text/plain")

        @r.route("GET", resource_path)
        def get_resource(request: Request) -> Response:
            group_of(request)
            rid, _ = resource_id(request)
            found = self.resources.get(self._key(rid))
            if found is None:
                raise arm_error(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{request.params['namespace']}/{request.params['kind']}/{request.params['name']}' under resource group '{request.params['group']}' was not found.",
                )
            if (
                request.query.get("$expand") == "instanceView"
                and found["type"] == "Microsoft.Compute/virtualMachines"
            ):
                return Response(
                    200,
                    {
                        **found,
                        "properties": {**found["properties"], "instanceView": self.instance_view(found)},
                    },
                )
            return Response(200, found)

        @r.route("DELETE", resource_path)
        def delete_resource(request: Request) -> Response:
            group = group_of(request)
            rid, _ = resource_id(request)
            found = self.resources.get(self._key(rid))
            if found is None:
                return Response(204, None)
            # Subresources (a network's subnets) go with their parent.
            users = [user for user in self._users(rid) if not user.lower().startswith(rid.lower())]
            if users:
                code = {
                    "networkInterfaces": "NicInUse",
                    "publicIPAddresses": "PublicIPAddressCannotBeDeleted",
                }.get(request.params["kind"], "InUseResourceCannotBeDeleted")
                raise arm_error(
                    400,
                    code,
                    f"{request.params['kind']} {rid} is in use by {users[0]} and cannot be deleted.",
                )
            headers = self._operation(
                request.params["namespace"],
                found.get("location", group["location"]),
                lambda: self._delete_cascade(found),
            )
            return Response(202, None, {**headers, "Location": headers["Azure-AsyncOperation"]})

        @r.route("GET", collection_path)
        def list_resources(request: Request) -> Response:
            group_of(request)
            p = request.params
            if request.query.get("$expand") and not request.query.get("$filter"):
                # "'instanceView' ... can only be specified if a valid $filter option is specified."
                raise arm_error(
                    400,
                    "InvalidParameter",
                    "The $expand parameter can only be specified together with $filter.",
                    "$expand",
                )
            prefix = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{p['group']}/providers/{p['namespace']}/{p['kind']}/".lower()
            found = [
                resource
                for key, resource in self.resources.items()
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]
            return Response(200, {"value": found})
