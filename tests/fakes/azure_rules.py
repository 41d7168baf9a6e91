"""What Azure Resource Manager refuses in the requests Gatehouse sends, each rule with where it is
published, for the fake in `azure_arm`. A rule raises ARM's error body (`{"error": {code, message}}`)
with the status ARM answers, so the SDKs and the backend see what they would see on Azure.

Sources:
- the Compute REST specification (github.com/Azure/azure-rest-api-specs, specification/compute/
  resource-manager/Microsoft.Compute/ComputeRP/stable/*/virtualMachine.json): `OSProfile.customData`
  ("The base-64 encoded string is decoded to a binary array ... The maximum length of the binary
  array is 65535 bytes"), `computerName` ("Linux ... 1 to 64 characters"), `adminUsername` (the
  disallowed names, "Max-length (Linux): 64 characters"), `hardwareProfile.vmSize`.
- naming rules: https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
  (resource groups 1-90 of letters, digits, `-_.()`, not ending in `.`; Linux VMs 1-64; NICs, NSGs,
  public IPs 1-80; virtual networks 2-64).
- tags: https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations
  (50 per resource, names up to 512 characters without `<>%&\\?/`, values up to 256).
- sizes: the Resource SKUs API (https://learn.microsoft.com/rest/api/compute/resource-skus/list) and
  its capabilities `vCPUs`, `CpuArchitectureType`, `HyperVGenerations`; generation 2 images boot only
  on sizes listing V2 (https://learn.microsoft.com/azure/virtual-machines/generation-2), Arm64
  sizes only Arm64 images (https://learn.microsoft.com/azure/virtual-machines/dpsv5-dpdsv5-series).
- images: Canonical's Ubuntu LTS offers publish `server` (x64, generation 2), `server-gen1` and
  `server-arm64` (`az vm image list-skus -p Canonical -f ubuntu-24_04-lts`).
"""

# ruff: noqa: E501 - error messages are Azure's, verbatim where known

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from tests.fakes.jsonhttp import HttpError

CUSTOM_DATA_BYTES = 65535
CUSTOM_DATA_CHARACTERS = 87380  # 65535 bytes, base64-encoded
MAX_TAGS = 50
TAG_NAME_CHARACTERS = 512
TAG_VALUE_CHARACTERS = 256
TAG_NAME_RESERVED = re.compile(r"[<>%&\\?/\x00-\x1f]")
GROUP_NAME = re.compile(r"[-\w.()]{1,90}")
NAME_LENGTHS = {
    "microsoft.compute/virtualmachines": (1, 64),
    "microsoft.network/networkinterfaces": (1, 80),
    "microsoft.network/networksecuritygroups": (1, 80),
    "microsoft.network/publicipaddresses": (1, 80),
    "microsoft.network/virtualnetworks": (2, 64),
}
DISALLOWED_ADMIN_USERNAMES = frozenset(
    [
        "administrator",
        "admin",
        "user",
        "user1",
        "test",
        "user2",
        "test1",
        "user3",
        "admin1",
        "1",
        "123",
        "a",
        "actuser",
        "adm",
        "admin2",
        "aspnet",
        "backup",
        "console",
        "david",
        "guest",
        "john",
        "owner",
        "root",
        "server",
        "sql",
        "support",
        "support_388945a0",
        "sys",
        "test2",
        "test3",
        "user4",
        "user5",
    ]
)


@dataclass(frozen=True)
class VmSize:
    """A size as the Resource SKUs API describes it."""

    name: str
    family: str
    vcpus: int
    architecture: str = "x64"
    generations: str = "V1,V2"

    def sku(self, location: str, restricted: bool) -> dict[str, Any]:
        restrictions = []
        if restricted:
            restrictions.append(
                {
                    "type": "Location",
                    "values": [location],
                    "restrictionInfo": {"locations": [location]},
                    "reasonCode": "NotAvailableForSubscription",
                }
            )
        capabilities = {
            "vCPUs": str(self.vcpus),
            "MemoryGB": str(self.vcpus * 2),
            "CpuArchitectureType": self.architecture,
            "HyperVGenerations": self.generations,
        }
        return {
            "resourceType": "virtualMachines",
            "name": self.name,
            "tier": "Standard",
            "size": self.name.removeprefix("Standard_"),
            "family": self.family,
            "locations": [location],
            "locationInfo": [{"location": location, "zones": ["1", "2", "3"]}],
            "capabilities": [{"name": key, "value": value} for key, value in capabilities.items()],
            "restrictions": restrictions,
        }


SIZES = {
    size.name: size
    for size in (
        VmSize("Standard_B1s", "standardBSFamily", 1),
        VmSize("Standard_B1ms", "standardBSFamily", 1),
        VmSize("Standard_B2s", "standardBSFamily", 2),
        VmSize("Standard_D2s_v5", "standardDSv5Family", 2),
        # Generation 1 only (the Av2 series).
        VmSize("Standard_A1_v2", "standardAv2Family", 1, generations="V1"),
        # Arm64 (Ampere Altra), generation 2 only.
        VmSize("Standard_D2ps_v5", "standardDPSv5Family", 2, architecture="Arm64", generations="V2"),
    )
}
# Image SKU of Canonical's Ubuntu LTS offers → (architecture, Hyper-V generation).
IMAGE_SKUS = {"server": ("x64", "V2"), "server-gen1": ("x64", "V1"), "server-arm64": ("Arm64", "V2")}


def arm_error(status: int, code: str, message: str, target: str | None = None) -> HttpError:
    body: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        body["target"] = target
    return HttpError(status, {"error": body})


def check_group_name(name: str) -> None:
    if not GROUP_NAME.fullmatch(name) or name.endswith("."):
        raise arm_error(
            400,
            "InvalidResourceGroup",
            f"The provided resource group name '{name}' has these invalid characters: ''. The name can only be a letter, digit, '-', '.', '(', ')' or '_'.",
        )


def check_name(kind: str, name: str) -> None:
    low, high = NAME_LENGTHS.get(kind, (1, 80))
    if not low <= len(name) <= high:
        raise arm_error(
            400,
            "InvalidResourceName",
            f"Resource name {name} is invalid. The name can be up to {high} characters long.",
        )


def check_tags(tags: dict[str, str] | None) -> None:
    tags = tags or {}
    if len(tags) > MAX_TAGS:
        raise arm_error(
            400, "InvalidTemplate", f"The number of tags {len(tags)} exceeds the maximum of {MAX_TAGS}."
        )
    for name, value in tags.items():
        if TAG_NAME_RESERVED.search(name):
            raise arm_error(
                400,
                "InvalidTagNameCharacters",
                f"The tag names '{name}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
            )
        if len(name) > TAG_NAME_CHARACTERS:
            raise arm_error(
                400,
                "InvalidTagNameLength",
                f"The tag name '{name[:20]}…' exceeds the maximum length of {TAG_NAME_CHARACTERS}.",
            )
        if len(str(value)) > TAG_VALUE_CHARACTERS:
            raise arm_error(
                400,
                "InvalidTagValueLength",
                f"The tag value for '{name}' exceeds the maximum length of {TAG_VALUE_CHARACTERS}.",
            )


def _required(properties: dict[str, Any], dotted: str) -> Any:
    value: Any = properties
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value in (None, "", []):
        raise arm_error(400, "InvalidParameter", f"Required parameter '{dotted}' is missing (null).", dotted)
    return value


def check_vm(body: dict[str, Any], sizes: dict[str, VmSize]) -> VmSize:
    """The VM's own fields; returns its size (already checked to be offered)."""
    properties = body.get("properties") or {}
    if not body.get("location"):
        raise arm_error(400, "LocationRequired", "The location property is required for this definition.")
    size = sizes[_required(properties, "hardwareProfile.vmSize")]
    os_profile = _required(properties, "osProfile")
    computer = _required(os_profile, "computerName")
    if len(computer) > 64 or not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9.]*", computer):
        raise arm_error(
            400,
            "InvalidParameter",
            "Linux host name cannot exceed 64 characters in length or contain the following characters: ` ~ ! @ # $ % ^ & * ( ) = + _ [ ] { } \\ | ; : ' \" , < > / ?.",
            "computerName",
        )
    admin = _required(os_profile, "adminUsername")
    if admin.lower() in DISALLOWED_ADMIN_USERNAMES or len(admin) > 64:
        raise arm_error(
            400, "InvalidParameter", "The Admin Username specified is not allowed.", "adminUsername"
        )
    custom = os_profile.get("customData")
    if custom is not None:
        try:
            decoded = base64.b64decode(custom, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
        if decoded is None or len(custom) > CUSTOM_DATA_CHARACTERS or len(decoded) > CUSTOM_DATA_BYTES:
            raise arm_error(
                400,
                "InvalidParameter",
                f"Custom data in OSProfile must be in Base64 encoding and with a maximum length of {CUSTOM_DATA_CHARACTERS} characters.",
                "customData",
            )
    image = _required(properties, "storageProfile.imageReference")
    architecture, generation = IMAGE_SKUS.get(image.get("sku", ""), ("x64", "V2"))
    if size.architecture != architecture:
        # Paraphrased: the platform refuses the pairing; the exact wording varies by API version.
        raise arm_error(
            400,
            "BadRequest",
            f"The selected VM size '{size.name}' cannot boot an image of architecture '{architecture}'. The architecture of the image must match the architecture of the VM size ('{size.architecture}').",
        )
    if generation not in size.generations.split(","):
        number = generation.removeprefix("V")
        raise arm_error(
            400,
            "BadRequest",
            f"The selected VM size '{size.name}' cannot boot Hypervisor Generation '{number}'. If this was a Create operation please check that the Hypervisor Generation of the Image matches the Hypervisor Generation of the selected VM Size. If this was an Update operation please select a Hypervisor Generation '{number}' VM Size. For more information, see https://aka.ms/azuregen2vm",
        )
    _required(properties, "networkProfile.networkInterfaces")
    return size
