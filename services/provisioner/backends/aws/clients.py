"""boto3 clients for one backend configuration, and AWS errors in the user's terms."""

from __future__ import annotations

import threading
from typing import Any, Literal

import boto3
import botocore.config
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from services.provisioner.backends.base import BackendError
from services.provisioner.credentials import AccessKeyCreds, AWSBackendConfig

AwsService = Literal["ec2", "elbv2", "acm"]

# Errors the user must act on (credentials, permissions, limits, bad input); anything else is retried.
USER_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AddressLimitExceeded",
        "AuthFailure",
        "Blocked",
        "CertificateNotFound",
        "ExpiredToken",
        "ExpiredTokenException",
        "InstanceLimitExceeded",
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Unavailable",
        "InvalidClientTokenId",
        "InvalidConfigurationRequest",
        "InvalidInstanceType",
        "InvalidParameter",
        "InvalidParameterCombination",
        "InvalidParameterValue",
        "InvalidSubnetID.NotFound",
        "InvalidVpcID.NotFound",
        "OptInRequired",
        "ResourceNotFoundException",
        "RulesPerSecurityGroupLimitExceeded",
        "SecurityGroupLimitExceeded",
        "SignatureDoesNotMatch",
        "TooManyLoadBalancers",
        "TooManyTargetGroups",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "Unsupported",
        "UnsupportedOperation",
        "ValidationError",
        "VcpuLimitExceeded",
    }
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def one_line(text: str) -> str:
    return " ".join(text.split())


def translate(error: Exception) -> Exception:
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return BackendError(f"aws: {one_line(str(error))}")
    if isinstance(error, ClientError):
        code = error_code(error)
        if code in USER_ERRORS:
            message = error.response.get("Error", {}).get("Message") or str(error)
            return BackendError(f"aws: {code}: {one_line(str(message))}")
    return error


class AwsClients:
    """Clients per (service, region); boto3 clients are thread-safe, sessions are not."""

    def __init__(self, config: AWSBackendConfig) -> None:
        self._config = config
        if isinstance(config.creds, AccessKeyCreds):
            self._session = boto3.session.Session(
                aws_access_key_id=config.creds.access_key,
                aws_secret_access_key=config.creds.secret_key.get_secret_value(),
            )
        else:
            self._session = boto3.session.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._retries = botocore.config.Config(retries={"mode": "standard", "max_attempts": 4})

    def client(self, service: AwsService, region: str) -> Any:
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                self._clients[key] = self._session.client(
                    service, region_name=region, endpoint_url=self._config.endpoint_url, config=self._retries
                )
            return self._clients[key]

    def ec2(self, region: str) -> Any:
        return self.client("ec2", region)

    def elbv2(self, region: str) -> Any:
        return self.client("elbv2", region)

    def acm(self, region: str) -> Any:
        return self.client("acm", region)
