"""Per-project backend credentials in dstack's `server/config.yml` format."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from services.provisioner.backends.base import BackendError
from services.provisioner.credentials import (
    AccessKeyCreds,
    AWSBackendConfig,
    AzureBackendConfig,
    ClientCreds,
    DefaultCreds,
    GCPBackendConfig,
    KubernetesBackendConfig,
    ServerConfigFile,
    ServiceAccountCreds,
    read_file_or_data,
)

DSTACK_CONFIG = """
projects:
  - name: main
    backends:
      - type: aws
        creds:
          type: access_key
          access_key: AKIAEXAMPLE
          secret_key: s3cr3t
        regions: [eu-west-1]
      - type: lambda
        creds: {type: api_key, api_key: whatever}
      - type: gcp
        project_id: my-project
        creds:
          type: service_account
          filename: ~/gcp-key.json
      - type: azure
        subscription_id: sub-1
        tenant_id: tenant-1
        creds: {type: client, client_id: app-1, client_secret: pw}
      - type: kubernetes
        kubeconfig:
          filename: ~/.kube/config
  - name: research
    backends:
      - type: aws
        creds: {type: default}
        endpoint_url: http://127.0.0.1:5000
        vpc_name: gateways
encryption:
  keys: []
"""


def write(path: Path, text: str) -> ServerConfigFile:
    path.write_text(textwrap.dedent(text))
    return ServerConfigFile(path)


def test_a_dstack_server_config_is_read_as_is(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yml", DSTACK_CONFIG)
    aws = config.backend_config("main", "aws")
    assert isinstance(aws, AWSBackendConfig) and isinstance(aws.creds, AccessKeyCreds)
    assert (aws.creds.access_key, aws.creds.secret_key.get_secret_value()) == ("AKIAEXAMPLE", "s3cr3t")
    assert "s3cr3t" not in repr(aws)
    gcp = config.backend_config("main", "gcp")
    assert isinstance(gcp, GCPBackendConfig) and isinstance(gcp.creds, ServiceAccountCreds)
    assert gcp.project_id == "my-project"
    azure = config.backend_config("main", "azure")
    assert isinstance(azure, AzureBackendConfig) and isinstance(azure.creds, ClientCreds)
    kubernetes = config.backend_config("main", "kubernetes")
    assert (
        isinstance(kubernetes, KubernetesBackendConfig) and kubernetes.kubeconfig.filename == "~/.kube/config"
    )
    research = config.backend_config("research", "aws")
    assert isinstance(research, AWSBackendConfig) and isinstance(research.creds, DefaultCreds)
    assert (research.endpoint_url, research.vpc_name) == ("http://127.0.0.1:5000", "gateways")


def test_a_project_or_backend_not_configured_has_none(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yml", DSTACK_CONFIG)
    assert config.backend_config("research", "gcp") is None
    assert config.backend_config("nobody", "aws") is None
    assert ServerConfigFile(tmp_path / "missing.yml").backend_config("main", "aws") is None


def test_an_invalid_backend_fails_in_one_line_naming_where(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.yml",
        """
        projects:
          - name: main
            backends:
              - type: aws
                creds: {type: access_key, access_key: AKIAEXAMPLE}
        """,
    )
    with pytest.raises(BackendError) as failure:
        config.backend_config("main", "aws")
    message = str(failure.value)
    assert "\n" not in message
    assert (
        message
        == f"{config.path}: project main, backends[0] (aws): creds.access_key.secret_key: Field required"
    )


def test_broken_yaml_fails_in_one_line(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yml", "projects: [\n")
    with pytest.raises(BackendError, match=r"not YAML") as failure:
        config.backend_config("main", "aws")
    assert "\n" not in str(failure.value)


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yml", DSTACK_CONFIG)
    assert config.backend_config("research", "gcp") is None
    path = tmp_path / "config.yml"
    path.write_text(DSTACK_CONFIG.replace("vpc_name: gateways", "vpc_name: edge"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    research = config.backend_config("research", "aws")
    assert isinstance(research, AWSBackendConfig) and research.vpc_name == "edge"


def test_a_key_file_is_read_or_its_absence_reported(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    found = ServiceAccountCreds(type="service_account", filename=str(key))
    assert read_file_or_data(found, "gcp credentials") == "{}"
    with pytest.raises(BackendError, match=r"^gcp credentials: cannot read .*nope.json: No such file"):
        read_file_or_data(
            ServiceAccountCreds(type="service_account", filename=str(tmp_path / "nope.json")),
            "gcp credentials",
        )
