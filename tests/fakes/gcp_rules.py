"""What Compute Engine refuses in the requests Gatehouse sends, each rule with where it is published,
for the fake in `gcp_compute`. A rule raises the error the API answers (400 `invalid`/`badRequest`,
412 `conditionNotMet`), so the real client and the backend see what they would see on a real project.

Sources (Compute Engine API v1, the discovery document https://compute.googleapis.com/$discovery/rest
?version=v1, and the pages it links):
- names: every resource's `name` field, "1-63 characters long, and comply with RFC1035 ... the
  regular expression `[a-z]([-a-z0-9]*[a-z0-9])?`".
- labels: https://cloud.google.com/compute/docs/labeling-resources#requirements (at most 64 per
  resource; keys start with a lowercase letter; keys and values at most 63 characters of lowercase
  letters, digits, `_` and `-`).
- metadata: https://cloud.google.com/compute/docs/metadata/setting-custom-metadata#limitations (a key
  at most 128 bytes, a value at most 256 KB, all entries together at most 512 KB).
- disk types: `AttachedDiskInitializeParams.diskType` ("If not specified, the default is
  pd-standard"), and the machine series pages' "Supported disk types" tables
  (https://cloud.google.com/compute/docs/machine-resource#machine_type_comparison,
  https://cloud.google.com/compute/docs/disks/hyperdisks#machine-type-support).
- `Address.labels`: "Labels for this resource. These can only be added or modified by the setLabels
  method" (so `addresses.insert` drops them); `labelFingerprint`: "you must provide an up-to-date
  fingerprint hash in order to update or change labels, otherwise the request will fail with error
  412 conditionNotMet".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from tests.fakes.jsonhttp import HttpError

NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_LABELS = 64
METADATA_KEY_BYTES = 128
METADATA_VALUE_BYTES = 256 * 1024
METADATA_TOTAL_BYTES = 512 * 1024
DEFAULT_DISK_TYPE = "pd-standard"
DISK_TYPES = frozenset({"pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced"})
# Series whose "Supported disk types" list no Persistent Disk at all (Hyperdisk only).
HYPERDISK_ONLY_SERIES = frozenset({"n4", "n4a", "n4d", "c4", "c4a", "c4d", "x4", "a4", "a4x", "h4d", "m4"})
# Series that take Persistent Disk, but not pd-standard.
NO_PD_STANDARD_SERIES = frozenset({"c3", "c3d", "h3", "m3", "a3", "z3"})
# Series that take no Hyperdisk Balanced (older hardware).
NO_HYPERDISK_SERIES = frozenset({"e2", "n1", "n2d", "t2a", "t2d", "c2d", "g2"})


def error(status: int, reason: str, message: str) -> HttpError:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return HttpError(status, body)


def invalid(field: str, value: Any, why: str) -> HttpError:
    shown = value if isinstance(value, str) else json.dumps(value)
    return error(400, "invalid", f"Invalid value for field '{field}': '{shown}'. {why}")


def required(field: str) -> HttpError:
    return error(400, "required", f"Required field '{field}' not specified")


def check_name(field: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise invalid(
            field, name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?|[1-9][0-9]{0,19})'"
        )


def check_labels(field: str, labels: Any) -> None:
    if labels is None:
        return
    if len(labels) > MAX_LABELS:
        raise invalid(field, labels, f"Resource can have at most {MAX_LABELS} labels.")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise invalid(
                field,
                labels,
                f"Label key '{key}' violates format constraints. The key must start with a lowercase "
                "character, can only contain lowercase letters, numeric characters, underscores and "
                "dashes. The key can be at most 63 characters long. International characters are allowed.",
            )
        if not LABEL_VALUE.fullmatch(value):
            raise invalid(
                field,
                labels,
                f"Label value '{value}' violates format constraints. The value can only contain lowercase "
                "letters, numeric characters, underscores and dashes. The value can be at most 63 "
                "characters long. International characters are allowed.",
            )


def label_fingerprint(labels: dict[str, str] | None) -> str:
    """An opaque fingerprint of a label set (the empty set's is the one GCP shows: 42WmSpB8rSM=)."""
    if not labels:
        return "42WmSpB8rSM="
    digest = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def check_fingerprint(current: dict[str, Any], sent: str | None) -> None:
    if sent != current.get("labelFingerprint", label_fingerprint(current.get("labels"))):
        raise error(
            412,
            "conditionNotMet",
            "Labels fingerprint either invalid or resource labels have changed",
        )


def check_metadata(metadata: dict[str, Any] | None) -> None:
    total = 0
    for item in (metadata or {}).get("items", []):
        key, value = item.get("key", ""), item.get("value", "")
        size = len(value.encode())
        total += len(key.encode()) + size
        if len(key.encode()) > METADATA_KEY_BYTES:
            raise invalid(
                "resource.metadata", key, f"Metadata key is longer than {METADATA_KEY_BYTES} bytes."
            )
        if size > METADATA_VALUE_BYTES:
            raise invalid(
                "resource.metadata",
                key,
                f"Metadata value for key '{key}' is {size} bytes, over the limit of {METADATA_VALUE_BYTES}.",
            )
    if total > METADATA_TOTAL_BYTES:
        raise invalid(
            "resource.metadata",
            "items",
            f"Metadata is {total} bytes, over the limit of {METADATA_TOTAL_BYTES}.",
        )


def series(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def check_disk_type(machine_type: str, disk_type: str) -> None:
    """What the machine series accepts as its boot disk's type."""
    family = series(machine_type)
    hyperdisk = disk_type.startswith("hyperdisk-")
    refused = (
        (not hyperdisk and family in HYPERDISK_ONLY_SERIES)
        or (disk_type == "pd-standard" and family in NO_PD_STANDARD_SERIES)
        or (hyperdisk and family in NO_HYPERDISK_SERIES)
    )
    if refused:
        raise error(400, "badRequest", f"[{disk_type}] features are not compatible for creating instance.")


def check_instance(body: dict[str, Any]) -> None:
    """The fields `instances.insert` needs, in the form they must take."""
    for name in ("name", "machineType", "disks", "networkInterfaces"):
        if not body.get(name):
            raise required(f"resource.{name}")
    check_name("resource.name", body["name"])
    check_labels("resource.labels", body.get("labels"))
    check_metadata(body.get("metadata"))
    boots = [disk for disk in body["disks"] if disk.get("boot")]
    if len(boots) != 1:
        raise invalid("resource.disks", body["disks"], "Exactly one boot disk must be specified.")
    params = boots[0].get("initializeParams") or {}
    if not params.get("sourceImage"):
        raise required("resource.disks[0].initializeParams.sourceImage")
    check_labels("resource.disks[0].initializeParams.labels", params.get("labels"))
