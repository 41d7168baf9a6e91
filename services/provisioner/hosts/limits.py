"""What each provider accepts as a host's startup data, each limit with where it is written down.

A host gets its first-boot script (`startup.pack_startup_script`: a small stub carrying the script
gzip'd) as AWS user data, GCP `startup-script` metadata or Azure custom data; a Kubernetes pod gets
its files from a Secret. `check_startup_data` refuses, in one line, what the provider would refuse
(or silently cut), before the cloud is asked.
"""

from __future__ import annotations

import base64

from services.provisioner.backends.base import BackendError

# AWS EC2, RunInstances UserData: "User data is limited to 16 KB, in raw form, before it is
# base64-encoded." https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html
EC2_USER_DATA_BYTES = 16 * 1024
# GCP Compute Engine, Metadata.items[].value: "their size must be less than or equal to 262144 bytes
# (256 KiB)"; Metadata.items: "The total size of all keys and values must be less than 512 KB."
# https://cloud.google.com/compute/docs/reference/rest/v1/instances (Metadata) and
# https://cloud.google.com/compute/docs/metadata/setting-custom-metadata#limitations
GCE_METADATA_VALUE_BYTES = 256 * 1024
GCE_METADATA_TOTAL_BYTES = 512 * 1024
# Azure, VirtualMachine osProfile.customData: "a base-64 encoded string ... decoded to a binary array
# ... The maximum length of the binary array is 65535 bytes."
# https://learn.microsoft.com/en-us/rest/api/compute/virtual-machines/create-or-update#osprofile
# The overview ("Custom data on Azure VMs", https://learn.microsoft.com/en-us/azure/virtual-machines/custom-data)
# speaks of 64 KB; both are checked, the encoded string against 64 KiB.
AZURE_CUSTOM_DATA_BYTES = 65535
AZURE_CUSTOM_DATA_BASE64_CHARS = 64 * 1024
# Kubernetes Secret: "Individual Secrets are limited to 1MiB in size."
# https://kubernetes.io/docs/concepts/configuration/secret/#restriction-data-size
KUBERNETES_SECRET_BYTES = 1024 * 1024


def startup_data_sizes(cloud: str, data: str) -> list[tuple[str, int, int]]:
    """(what, size, limit) of each limit `data`, sent as `cloud` sends it, is held to."""
    raw = len(data.encode())
    if cloud == "aws":
        return [("EC2 user data", raw, EC2_USER_DATA_BYTES)]
    if cloud == "gcp":
        # One item (`startup-script`) besides a few short keys: held to the value limit, and with its
        # key to the total.
        return [
            ("GCE metadata value", raw, GCE_METADATA_VALUE_BYTES),
            ("GCE metadata", raw + len(b"startup-script"), GCE_METADATA_TOTAL_BYTES),
        ]
    if cloud == "azure":
        encoded = len(base64.b64encode(data.encode()))
        return [
            ("Azure custom data", raw, AZURE_CUSTOM_DATA_BYTES),
            ("Azure custom data (base64)", encoded, AZURE_CUSTOM_DATA_BASE64_CHARS),
        ]
    return []


def check_startup_data(cloud: str, data: str) -> None:
    """Raises BackendError when `cloud` would refuse `data` as a host's startup data."""
    for what, size, limit in startup_data_sizes(cloud, data):
        if size > limit:
            raise BackendError(
                f"{cloud}: the gateway host's startup data is {size} bytes, over the {limit}-byte "
                f"{what} limit"
            )
