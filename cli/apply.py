"""`gatehouse apply -f` and `gatehouse delete -f`: plan, confirm, apply, wait, show."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import struct_pb2

from cli.config import CliError
from cli.loader import load_configuration
from cli.output import console, gateways_table, services_table
from cli.prompt import confirm
from gatehouse import rollouts
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2


def _timeout() -> float:
    return float(os.environ.get("GATEHOUSE_APPLY_TIMEOUT", "600"))


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(data)
    return result


def _header(project: str, path: str, data: dict[str, Any]) -> None:
    rows: list[tuple[str, object]] = [
        ("Project", project),
        ("Configuration", path),
        ("Type", str(data.get("type"))),
    ]
    if data.get("type") == "gateway":
        rows += [
            ("Backend", data.get("backend")),
            ("Region", data.get("region")),
            ("Domain", data.get("domain")),
        ]
    else:
        rows += [("Gateway", data.get("gateway")), ("Port", data.get("port"))]
    for key, value in rows:
        if value not in (None, ""):
            console.print(f" [bold]{key:<14}[/bold]{value}")
    console.print()


async def _confirm_plan(stubs: Stubs, plan: registry_pb2.Plan, path: str, yes: bool) -> bool:
    """Asks what the plan needs asked; a yes to re-creating deletes the old one first."""
    kind, name = plan.type, plan.name
    if plan.action == "create":
        # Seed 000's words: "The example-gateway doesn't exist. Create it? [y/n]:"
        question = f"The {name} doesn't exist. Create it?" if name else f"Create a new {kind}?"
        return await confirm(question, yes)
    if plan.action == "update":
        console.print(f"The {kind} {name} will be updated in place:")
        for change in plan.changes:
            console.print(f"  {change}")
        return await confirm(f"Update the {kind} {name}?", yes)
    if plan.action == "recreate":
        reason = "; ".join(plan.changes) or "it failed"
        question = f"The {kind} {name} cannot be updated in place ({reason}). Re-create it?"
        if not await confirm(question, yes):
            return False
        deleted = await stubs.gateways.Delete(
            registry_pb2.DeleteRequest(project=plan.gateway.project, name=name)
        )
        await _wait_gone(stubs, deleted)
        return True
    console.print("No configuration changes.")
    return True


async def apply_file(stubs: Stubs, project: str, path: str, yes: bool, force: bool, detach: bool) -> int:
    data, source = load_configuration(path)
    request = registry_pb2.ApplyRequest(
        project=project, configuration=_struct(data), source=source, force=force
    )
    plan = await stubs.configurations.GetPlan(request)
    _header(project, path, data)
    if not await _confirm_plan(stubs, plan, path, yes):
        return 0
    if plan.action != "recreate":
        request.expected_version = plan.current_version
    response = await stubs.configurations.Apply(request)
    created = plan.action in ("create", "recreate")
    try:
        if response.HasField("gateway"):
            return await _follow_gateway(stubs, response.gateway, detach)
        return await _follow_service(stubs, response.service, detach)
    except asyncio.CancelledError:
        # Ctrl-C while waiting: offer to take back what this apply created.
        resource = response.gateway if response.HasField("gateway") else response.service
        kind = "gateway" if response.HasField("gateway") else "service"
        console.print()
        if created and await confirm(f"Delete the {kind} {resource.name} that is being created?", False):
            remove = registry_pb2.DeleteRequest(project=project, name=resource.name, force=True)
            if kind == "gateway":
                await stubs.gateways.Delete(remove)
            else:
                await stubs.services.Delete(remove)
            console.print(f"Deleting the {kind} {resource.name}.")
        return 130


@contextlib.contextmanager
def _status(text: str) -> Iterator[None]:
    """A spinner on a terminal; piped, the line once (seed 000's "Provisioning...")."""
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        console.print(text)
        yield


_GAVE_UP = "gave up waiting after {:.0f}s (GATEHOUSE_APPLY_TIMEOUT); see `gatehouse {} list -v`"


async def _until(
    follow: Any, request: registry_pb2.GetRequest, kind: str, done: Callable[[Any], bool]
) -> Any:
    """The first state of the resource `done` accepts, as the registry tells each change (no
    polling), within the apply timeout."""
    call = follow(request, timeout=_timeout())
    try:
        async for resource in call:
            if done(resource):
                return resource
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(_GAVE_UP.format(_timeout(), kind)) from None
        raise
    finally:
        call.cancel()
    raise CliError(f"the registry stopped telling the {kind}'s changes: see `gatehouse {kind} list -v`")


def _settled(gateway: resources_pb2.Gateway) -> bool:
    return gateway.status.state in (resources_pb2.GATEWAY_STATE_RUNNING, resources_pb2.GATEWAY_STATE_FAILED)


async def _follow_gateway(stubs: Stubs, gateway: resources_pb2.Gateway, detach: bool) -> int:
    get = registry_pb2.GetRequest(project=gateway.project, name=gateway.name)
    if not detach:
        with _status("Provisioning..."):
            gateway = await _until(stubs.gateways.Follow, get, "gateway", _settled)
    gateways_table([gateway])
    if gateway.status.state == resources_pb2.GATEWAY_STATE_FAILED:
        raise CliError(f'gateway "{gateway.name}" failed: {gateway.status.message}')
    _print_dns_record(gateway)
    return 0


def _print_dns_record(gateway: resources_pb2.Gateway) -> None:
    if not gateway.spec.domain or not gateway.status.hostname:
        return
    try:
        ipaddress.ip_address(gateway.status.hostname)
        record = "A"
    except ValueError:
        record = "CNAME"
    # `certificate: null` serves plain HTTP: no https:// promised.
    scheme = "https" if gateway.spec.HasField("certificate") else "http"
    console.print(
        f"Add a DNS record: *.{gateway.spec.domain} {record} {gateway.status.hostname} "
        f"(services will be at {scheme}://<run-name>.{gateway.spec.domain})",
        soft_wrap=False,  # wrapped between words on a terminal; one line when piped
    )


async def _follow_service(stubs: Stubs, service: resources_pb2.Service, detach: bool) -> int:
    get = registry_pb2.GetRequest(project=service.project, name=service.name)
    applied = service.generation
    if detach:
        services_table([service])
        for url in service.status.urls:
            console.print(f"The service will be available at {url} once a replica is ready")
        _how_to_call(service)
        return 0
    shown = ""

    def done(service: resources_pb2.Service) -> bool:
        nonlocal shown
        # Runners report on the generation they looked at: an older one's failure is not this one's.
        seen = not service.spec.commands or service.status.observed_generation >= applied
        if seen and service.status.state == resources_pb2.SERVICE_STATE_FAILED:
            return True
        rollout = service.status.rollout
        settled = (rollouts.COMPLETE, rollouts.CANARY)
        if seen and rollout.generation == applied and rollout.state not in settled:
            if rollout.message != shown and rollout.state != rollouts.FAILED:
                shown = rollout.message
                console.print(f"Rolling out: {shown}")
            return rollout.state == rollouts.FAILED
        return seen and _ready(service) and service.status.live.live

    with _status("Starting..."):
        service = await _until(stubs.services.Follow, get, "service", done)
    services_table([service])
    if service.status.state == resources_pb2.SERVICE_STATE_FAILED:
        raise CliError(f'service "{service.name}" failed: {service.status.message}')
    rollout = service.status.rollout
    if rollout.generation == applied and rollout.state == rollouts.FAILED:
        raise CliError(
            f'service "{service.name}": the change was {rollout.message}; the previous version serves'
        )
    if service.status.desired_replicas and not service.status.ready_replicas:
        raise CliError(
            f'service "{service.name}" has no ready replica: {service.status.message or "see its logs"}'
        )
    if rollout.generation == applied and rollout.state == rollouts.CANARY:
        console.print(f"Canary: {rollout.message}", soft_wrap=False)
    for url in service.status.urls:
        console.print(f"The service is available at {url}")
    _how_to_call(service)
    return 0


def _how_to_call(service: resources_pb2.Service) -> None:
    """`auth: true` is the default, so the first request without a token gets 401: say how."""
    if not service.spec.auth or not service.status.urls:
        return
    console.print("Auth is on, so call it with a token:", soft_wrap=False)
    # One line whatever the width, so that it copies whole.
    console.print(f'  curl -H "Authorization: Bearer $(gatehouse token)" {service.status.urls[0]}')


def _ready(service: resources_pb2.Service) -> bool:
    """A replica takes traffic (a service scaled to zero is ready with none: Envoy wakes it)."""
    if not service.spec.commands:
        return True
    return service.status.ready_replicas >= min(1, service.status.desired_replicas)


async def delete_file(stubs: Stubs, project: str, path: str, yes: bool, force: bool) -> int:
    data, source = load_configuration(path, pass_through=False)
    request = registry_pb2.ApplyRequest(
        project=project, configuration=_struct(data), source=source, deleting=True
    )
    plan = await stubs.configurations.GetPlan(request)
    if plan.action == "create":
        raise CliError(f'the {plan.type} {plan.name or "of " + path} does not exist in project "{project}"')
    if not await confirm(f"Delete the {plan.type} {plan.name}?", yes):
        return 0
    response = await stubs.configurations.Delete(
        registry_pb2.DeleteConfigurationRequest(
            project=project, configuration=_struct(data), source=source, force=force
        )
    )
    if response.HasField("gateway"):
        await _wait_gone(stubs, response.gateway)
    console.print(f"Deleted the {plan.type} {plan.name}.")
    return 0


async def _wait_gone(stubs: Stubs, gateway: resources_pb2.Gateway) -> None:
    get = registry_pb2.GetRequest(project=gateway.project, name=gateway.name)
    with _status("Deleting..."):
        try:
            await _until(stubs.gateways.Follow, get, "gateway", lambda _: False)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
