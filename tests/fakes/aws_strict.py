"""A proxy in front of moto_server that refuses what AWS refuses and moto lets through, for EC2 and
ELBv2 (ACM, Route 53 and moto's own API pass through untouched). Clients point `endpoint_url` at it
exactly as they would at moto.

Every request is read back through the botocore model and checked against it (`aws_model`). On top,
the rules AWS documents and moto skips, each with its source:
- RunInstances `UserData`: "User data is limited to 16 KB" (before base64; EC2 API Reference,
  RunInstances, and https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html).
- RunInstances `ImageId`: "An AMI ID is required to launch an instance and must be specified here or
  in a launch template"; `ClientToken`: "Constraints: Maximum 64 ASCII characters" (RunInstances).
- Instance types are offered zone by zone: a launch into a zone whose DescribeInstanceTypeOfferings
  (LocationType availability-zone, moto's own data from AWS) lacks the type is refused with
  `Unsupported`, as EC2 does (https://repost.aws/knowledge-center/ec2-instance-type-not-supported-az).
- The vCPU quota ("Running On-Demand Standard instances", `vcpu_limit`) refuses a launch beyond it
  with `VcpuLimitExceeded` (https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html).
- Tags: at most 50 per resource, keys 1-128 and values up to 256 characters, no `aws:` prefix
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).
- CreateSecurityGroup `GroupName`/`Description`: up to 255 characters of a-z A-Z 0-9, spaces and
  `._-:/()#,@[]+=&;{}!$*`; a name not starting with `sg-` (CreateSecurityGroup, "Constraints").
- ELBv2 CreateLoadBalancer/CreateTargetGroup `Name`: at most 32 alphanumeric characters or hyphens,
  not beginning or ending with a hyphen; a load balancer's not beginning with `internal-`.

And what AWS accepts but leaves a gateway host cut off, recorded in `findings` (a test fails on any
left there): a host launched without a public address into a subnet whose default route is not a
NAT gateway, or with one into a subnet whose default route is not an internet gateway
(https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-gateway.html,
https://docs.aws.amazon.com/vpc/latest/userguide/VPC_Internet_Gateway.html).

GetConsoleOutput answers for an instance in `consoles` with what that host printed (moto answers
every instance with one fixed Xen boot log): its last 64 KB, base64, as EC2 gives the latest output
("the most recent 64 KB of console output", GetConsoleOutput)."""

# ruff: noqa: E501 - error messages are AWS's

from __future__ import annotations

import base64
import binascii
import http.client
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import boto3
from botocore.exceptions import ClientError

from services.provisioner.backends.aws.clients import AwsService
from tests.fakes import aws_model
from tests.fakes.aws_model import Problem

USER_DATA_BYTES = 16 * 1024
CLIENT_TOKEN_CHARACTERS = 64
MAX_TAGS = 50
TAG_KEY_CHARACTERS = 128
TAG_VALUE_CHARACTERS = 256
GROUP_TEXT = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{0,255}")
ELB_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?")
ANYWHERE = "0.0.0.0/0"
CONSOLE_OUTPUT_BYTES = 64 * 1024
SERVICES = {"ec2": "ec2", "elasticloadbalancing": "elbv2"}
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request")


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.problem = Problem(code, message)


def _tags_problems(tags: list[dict[str, str]]) -> list[Problem]:
    problems = []
    if len(tags) > MAX_TAGS:
        problems.append(Problem("TagLimitExceeded", f"The maximum number of tags per resource is {MAX_TAGS}"))
    for tag in tags:
        key, value = tag.get("Key", ""), tag.get("Value", "")
        if key.lower().startswith("aws:"):
            problems.append(
                Problem(
                    "InvalidParameterValue",
                    f"Value ( {key} ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved "
                    "for internal use",
                )
            )
        if not 1 <= len(key) <= TAG_KEY_CHARACTERS:
            problems.append(
                Problem(
                    "InvalidParameterValue", f"Tag key must be 1 to {TAG_KEY_CHARACTERS} characters: {key}"
                )
            )
        if len(value) > TAG_VALUE_CHARACTERS:
            problems.append(
                Problem(
                    "InvalidParameterValue", f"Tag value exceeds the maximum length of {TAG_VALUE_CHARACTERS}"
                )
            )
    return problems


@dataclass
class StrictAws:
    upstream: str
    # vCPUs of pending and running instances the account may have (None: no quota).
    vcpu_limit: int | None = None
    findings: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # instance id -> what the host printed on its serial console (GetConsoleOutput).
    consoles: dict[str, str] = field(default_factory=dict)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def serve(self) -> Iterator[StrictAws]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def moto(self, service: AwsService, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.upstream,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    # -- checks -------------------------------------------------------------------------------

    def check(self, service: str, region: str, params: dict[str, str]) -> list[Problem]:
        """What AWS would refuse in this request (empty: forward it)."""
        action = params.get("Action", "")
        model = aws_model.operation(service, action)
        if model is None or model.input_shape is None:
            return []
        request = aws_model.read(model.input_shape, params, ec2=service == "ec2")
        problems = aws_model.check(model.input_shape, request)
        rule = {
            ("ec2", "RunInstances"): self._run_instances,
            ("ec2", "CreateSecurityGroup"): self._create_security_group,
            ("elbv2", "CreateLoadBalancer"): self._create_load_balancer,
            ("elbv2", "CreateTargetGroup"): self._create_target_group,
        }.get((service, action))
        if rule is not None and not problems:
            problems += rule(region, request)
        for specification in request.get("TagSpecifications", []):
            problems += _tags_problems(specification.get("Tags", []))
        if (service, action) in (("ec2", "CreateTags"), ("elbv2", "AddTags")):
            problems += _tags_problems(request.get("Tags", []))
        return problems

    def _run_instances(self, region: str, request: dict[str, Any]) -> list[Problem]:
        problems = []
        if not request.get("ImageId") and "LaunchTemplate" not in request:
            problems.append(Problem("MissingParameter", "The request must contain the parameter ImageId"))
        user_data = request.get("UserData", "")
        try:
            raw = base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            return [Problem("InvalidParameterValue", "Invalid BASE64 encoding of user data.")]
        if len(raw) > USER_DATA_BYTES:
            problems.append(
                Problem("InvalidParameterValue", f"User data is limited to {USER_DATA_BYTES} bytes")
            )
        token = request.get("ClientToken", "")
        if len(token) > CLIENT_TOKEN_CHARACTERS or not token.isascii():
            problems.append(
                Problem(
                    "InvalidParameterValue",
                    f"Value ({token}) for parameter clientToken is invalid. Maximum 64 ASCII characters.",
                )
            )
        if problems:
            return problems
        interfaces = request.get("NetworkInterfaces") or [{}]
        subnet_id = interfaces[0].get("SubnetId") or request.get("SubnetId")
        instance_type = request.get("InstanceType", "m1.small")
        if subnet_id:
            problems += self._offered(region, instance_type, subnet_id)
        problems += self._within_quota(region, instance_type, int(request.get("MaxCount", 1)))
        if not problems and subnet_id:
            public = interfaces[0].get("AssociatePublicIpAddress")
            self._reachability(region, subnet_id, public)
        return problems

    def _offered(self, region: str, instance_type: str, subnet_id: str) -> list[Problem]:
        ec2 = self.moto("ec2", region)
        subnets = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
        if not subnets:
            return []
        zone = subnets[0]["AvailabilityZone"]
        offerings = ec2.describe_instance_type_offerings(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
        )["InstanceTypeOfferings"]
        zones = sorted(offering["Location"] for offering in offerings)
        if zone in zones:
            return []
        if not zones:
            try:
                ec2.describe_instance_types(InstanceTypes=[instance_type])
            except ClientError:
                return []  # an unknown type gets moto's (AWS's) own error
            return [
                Problem(
                    "Unsupported",
                    "The requested configuration is currently not supported. Please check the documentation "
                    "for supported configurations.",
                )
            ]
        return [
            Problem(
                "Unsupported",
                f"Your requested instance type ({instance_type}) is not supported in your requested "
                f"Availability Zone ({zone}). Please retry your request by not specifying an Availability "
                f"Zone or choosing {', '.join(zones)}.",
            )
        ]

    def _within_quota(self, region: str, instance_type: str, count: int) -> list[Problem]:
        if self.vcpu_limit is None:
            return []
        ec2 = self.moto("ec2", region)

        def vcpus(kind: str) -> int:
            found = ec2.describe_instance_types(InstanceTypes=[kind])["InstanceTypes"]
            return int(found[0]["VCpuInfo"]["DefaultVCpus"]) if found else 1

        live = ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        used = sum(vcpus(i["InstanceType"]) for reservation in live for i in reservation["Instances"])
        if used + count * vcpus(instance_type) <= self.vcpu_limit:
            return []
        return [
            Problem(
                "VcpuLimitExceeded",
                f"You have requested more vCPU capacity than your current vCPU limit of {self.vcpu_limit} "
                "allows for the instance bucket that the specified instance type belongs to. Please visit "
                "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
            )
        ]

    def _reachability(self, region: str, subnet_id: str, public: bool | None) -> None:
        ec2 = self.moto("ec2", region)
        [subnet] = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
        tables = (
            ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])[
                "RouteTables"
            ]
            or ec2.describe_route_tables(
                Filters=[
                    {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                    {"Name": "association.main", "Values": ["true"]},
                ]
            )["RouteTables"]
        )
        default = [
            route
            for table in tables
            for route in table.get("Routes", [])
            if route.get("DestinationCidrBlock") == ANYWHERE and route.get("State", "active") == "active"
        ]
        if public is None:
            public = bool(subnet.get("MapPublicIpOnLaunch"))
        if public and not any(str(route.get("GatewayId", "")).startswith("igw-") for route in default):
            self.findings.append(
                f"a host with a public address in {subnet_id}, whose default route is no internet gateway: "
                "it reaches nothing"
            )
        if not public and not any(route.get("NatGatewayId") for route in default):
            self.findings.append(
                f"a host without a public address in {subnet_id}, whose default route is no NAT gateway: "
                "it cannot reach the control plane"
            )

    def _create_security_group(self, region: str, request: dict[str, Any]) -> list[Problem]:
        problems = []
        for name in ("GroupName", "Description"):
            value = request.get(name, "")
            if not GROUP_TEXT.fullmatch(value):
                problems.append(
                    Problem("InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid.")
                )
        if request.get("GroupName", "").startswith("sg-"):
            problems.append(Problem("InvalidParameterValue", "Group names may not be in the format sg-*."))
        return problems

    def _create_load_balancer(self, region: str, request: dict[str, Any]) -> list[Problem]:
        name = request.get("Name", "")
        if len(name) > 32:
            return [
                Problem(
                    "ValidationError", f"Load balancer name '{name}' cannot be longer than '32' characters"
                )
            ]
        if not ELB_NAME.fullmatch(name) or name.startswith("internal-"):
            return [
                Problem(
                    "ValidationError",
                    f"Load balancer name '{name}' can only contain characters that are alphanumeric characters "
                    "or hyphens(-), must not begin or end with a hyphen, and must not begin with 'internal-'",
                )
            ]
        return []

    def _create_target_group(self, region: str, request: dict[str, Any]) -> list[Problem]:
        name = request.get("Name", "")
        if len(name) > 32:
            return [
                Problem(
                    "ValidationError", f"Target group name '{name}' cannot be longer than '32' characters"
                )
            ]
        if not ELB_NAME.fullmatch(name):
            return [
                Problem(
                    "ValidationError",
                    f"Target group name '{name}' can only contain characters that are alphanumeric characters "
                    "or hyphens(-), and must not begin or end with a hyphen",
                )
            ]
        return []

    # -- the wire -----------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        match = _CREDENTIAL.search(headers.get("authorization", ""))
        service = SERVICES.get(match.group(2)) if match else None
        with self._lock:
            self.requests.append((method, path))
            if path == "/moto-api/reset":
                self.findings.clear()
                self.consoles.clear()
        if service is not None and method == "POST" and match is not None:
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            problems = self.check(service, match.group(1), params)
            if problems:
                return 400, {"Content-Type": "text/xml"}, _error_body(service, problems[0])
            printed = self.consoles.get(params.get("InstanceId", ""))
            if (service, params.get("Action")) == ("ec2", "GetConsoleOutput") and printed is not None:
                return 200, {"Content-Type": "text/xml"}, _console_body(params["InstanceId"], printed)
        return self._forward(method, path, headers, body)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            sent = {key: value for key, value in headers.items() if key not in ("host", "connection")}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            payload = response.read()
            kept = {
                key: value
                for key, value in response.getheaders()
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date")
            }
            return response.status, kept, payload
        finally:
            connection.close()


def _console_body(instance_id: str, printed: str) -> bytes:
    output = base64.b64encode(printed.encode()[-CONSOLE_OUTPUT_BYTES:]).decode()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
        f'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>{uuid.uuid4()}</requestId>'
        f"<instanceId>{escape(instance_id)}</instanceId><timestamp>2025-01-15T00:00:00.000Z</timestamp>"
        f"<output>{output}</output></GetConsoleOutputResponse>"
    ).encode()


def _error_body(service: str, problem: Problem) -> bytes:
    request_id = str(uuid.uuid4())
    code, message = escape(problem.code), escape(problem.message)
    if service == "ec2":
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
    return (
        '<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()


def _handler(strict: StrictAws) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, answer_headers, payload = strict.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in answer_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
