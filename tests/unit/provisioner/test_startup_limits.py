"""Startup data stays well under every provider's limit, for the largest realistic gateway host:
mTLS on, the longest control-plane names, a mirrored image pinned by digest, many ports and tags."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.provisioner.backends.base import BackendError
from services.provisioner.hosts import limits
from services.provisioner.hosts.startup import pack_startup_script, unpack_startup_script
from tests.support.startup_data import largest_plan, startup_data


def test_ec2_user_data_is_under_half_its_limit_where_the_unpacked_script_is_over_it(tmp_path: Path) -> None:
    data = startup_data("aws", tmp_path)
    size = len(data.sent.encode())
    assert size <= limits.EC2_USER_DATA_BYTES // 2, size
    # What it carries would not fit: this is what failed every AWS gateway with mTLS.
    assert data.carried_bytes > limits.EC2_USER_DATA_BYTES


def test_gce_metadata_is_well_under_its_value_and_total_limits(tmp_path: Path) -> None:
    data = startup_data("gcp", tmp_path)
    for what, size, limit in limits.startup_data_sizes("gcp", data.sent):
        assert size <= limit // 16, (what, size)


def test_azure_custom_data_is_well_under_its_limit_decoded_and_encoded(tmp_path: Path) -> None:
    data = startup_data("azure", tmp_path)
    # As the driver sends it: base64 of the startup data.
    encoded = base64.b64encode(data.sent.encode())
    assert len(encoded) <= limits.AZURE_CUSTOM_DATA_BASE64_CHARS // 4
    assert len(base64.b64decode(encoded)) <= limits.AZURE_CUSTOM_DATA_BYTES // 4


def test_the_kubernetes_secret_is_well_under_a_mebibyte(tmp_path: Path) -> None:
    data = startup_data("kubernetes", tmp_path)
    assert len(data.sent.encode()) <= limits.KUBERNETES_SECRET_BYTES // 16
    secret = json.loads(data.sent)
    assert "join-token" in secret["data"]


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_the_startup_data_carries_the_whole_script_with_its_own_token(cloud: str, tmp_path: Path) -> None:
    plan = largest_plan(cloud, tmp_path)
    first, second = (unpack_startup_script(plan.startup_script(index)) for index in (0, 1))
    assert first.startswith("#!/bin/bash\n") and first != second
    assert f"gateway/{plan.gateway_id}/1" in second
    assert plan.envoy_image in first


def test_packing_is_deterministic_and_lossless() -> None:
    script = "#!/bin/bash\necho 'é' $((1 + 1))\n" * 500
    assert pack_startup_script(script) == pack_startup_script(script)
    assert unpack_startup_script(pack_startup_script(script)) == script
    assert len(pack_startup_script(script)) < len(script) // 10


def test_data_over_a_clouds_limit_is_refused_in_one_line_before_the_cloud_is_asked() -> None:
    over = "x" * (limits.EC2_USER_DATA_BYTES + 1)
    with pytest.raises(BackendError, match=r"^aws: .* 16385 bytes, over the 16384-byte EC2 user data limit$"):
        limits.check_startup_data("aws", over)
    limits.check_startup_data("gcp", over)
    with pytest.raises(BackendError, match="Azure custom data"):
        limits.check_startup_data("azure", "x" * 65536)
