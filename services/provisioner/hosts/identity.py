"""A gateway host's identity towards gateway_xds, the same on a cloud VM and in a Kubernetes pod.

The host gets a few files from the provisioner in CONFIG_DIR (the Envoy bootstrap, the internal CA,
a single-use join token, the file-based SDS resource and `join.sh`): a cloud startup script writes
them, a pod mounts them from its Secret. `join.sh` makes a key on the host and trades the token and a
certificate request for the client certificate at `/v1/join`; later it renews the certificate with
the current one as proof (mTLS to `/v1/renew`) once two thirds of its lifetime have passed. The key
and the certificate are one file in IDENTITY_DIR, replaced by one rename; Envoy reads it through
file-based SDS, so a renewed certificate is picked up without a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gatehouse.envoy_bootstrap import XdsTls, sds_resource
from services.common.internal_ca import XDS_SERVER_NAME

CONFIG_DIR = "/etc/gatehouse"
BOOTSTRAP_PATH = f"{CONFIG_DIR}/envoy.json"
CA_PATH = f"{CONFIG_DIR}/xds-ca.pem"
JOIN_TOKEN_PATH = f"{CONFIG_DIR}/join-token"
JOIN_SCRIPT_PATH = f"{CONFIG_DIR}/join.sh"
SDS_PATH = f"{CONFIG_DIR}/xds-client-sds.json"
# Written by join.sh: the client certificate followed by its key (0600).
IDENTITY_DIR = "/var/lib/gatehouse"
IDENTITY_PATH = f"{IDENTITY_DIR}/xds-client.pem"

JOIN_PATH = "/v1/join"
RENEW_PATH = "/v1/renew"
# How often a host looks at its certificate (it renews once two thirds of the lifetime have passed).
RENEW_CHECK_SECONDS = 3600


@dataclass(frozen=True)
class JoinEndpoint:
    """Where hosts join and renew (`https://host:port`), and the CA (public) that signed its certificate."""

    url: str
    ca_pem: str


@dataclass(frozen=True)
class HostFile:
    """A file the provisioner gives a host in CONFIG_DIR."""

    path: str
    content: str
    # Readable by its owner only (the join token).
    private: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


def xds_tls() -> XdsTls:
    """How a host's Envoy presents its identity: the one file join.sh keeps current, through SDS."""
    return XdsTls(IDENTITY_PATH, IDENTITY_PATH, CA_PATH, XDS_SERVER_NAME, sds_file=SDS_PATH)


def join_command(mode: str, join: JoinEndpoint) -> list[str]:
    """`join` (before Envoy starts), `renew` (a timer) or `renew-loop` (a pod's sidecar)."""
    return ["/bin/sh", JOIN_SCRIPT_PATH, mode, join.url]


def host_files(bootstrap: dict[str, Any], join: JoinEndpoint | None, token: str | None) -> list[HostFile]:
    """Everything a host needs in CONFIG_DIR; without `join`, the bootstrap alone (plain-text xDS)."""
    files = [HostFile(BOOTSTRAP_PATH, json.dumps(bootstrap, indent=2, sort_keys=True))]
    if join is None:
        return files
    files += [
        HostFile(CA_PATH, join.ca_pem),
        HostFile(SDS_PATH, json.dumps(sds_resource(xds_tls()), indent=2, sort_keys=True)),
        HostFile(JOIN_SCRIPT_PATH, join_script()),
    ]
    if token is not None:
        files.append(HostFile(JOIN_TOKEN_PATH, token, private=True))
    return files


def join_script() -> str:
    settings = "".join(
        f'{name}="{value}"\n'
        for name, value in [
            ("ca", f"$root{CA_PATH}"),
            ("token_file", f"$root{JOIN_TOKEN_PATH}"),
            ("identity_dir", f"$root{IDENTITY_DIR}"),
            ("identity", f"$root{IDENTITY_PATH}"),
            ("server_name", XDS_SERVER_NAME),
            ("join_path", JOIN_PATH),
            ("renew_path", RENEW_PATH),
            ("interval", f"${{GATEHOUSE_RENEW_INTERVAL:-{RENEW_CHECK_SECONDS}}}"),
        ]
    )
    return _SCRIPT_HEAD + settings + _SCRIPT_BODY


_SCRIPT_HEAD = """\
#!/bin/sh
# Gatehouse: the gateway host's client certificate for gateway_xds.
#   join.sh join URL        trade the join token for a certificate of a key made here (before Envoy
#                           starts); nothing to do while the host has a valid certificate
#   join.sh renew URL       once two thirds of its lifetime have passed, trade the current
#                           certificate (mTLS) for one of a new key
#   join.sh renew-loop URL  renew, then look again every GATEHOUSE_RENEW_INTERVAL seconds
# The key and the certificate are one file, replaced by one rename; Envoy reads it through file-based
# SDS and picks up a renewal by itself. Needs sh, openssl and coreutils only: Ubuntu hosts and the
# official Envoy image (whose ca-certificates package brings openssl) have them.
set -eu
root="${GATEHOUSE_ROOT:-}"
"""

_SCRIPT_BODY = r"""attempts="${GATEHOUSE_JOIN_ATTEMPTS:-60}"
usage="usage: join.sh join|renew|renew-loop https://HOST:PORT"
mode="${1:?$usage}"
url="${2:?$usage}"
address="${url#https://}"
address="${address%%/*}"

log() { echo "gatehouse-identity: $*" >&2; }

# post PATH REQUEST HEADER [s_client options]: sends the certificate request over TLS that trusts
# only the internal CA and the xDS server name; the answer's body goes to REQUEST.body.
# Returns 0 on 200, 2 when refused (4xx: nothing will change by trying again), 1 otherwise.
post() {
  path="$1" request="$2" header="$3"
  shift 3
  length=$(wc -c < "$request" | tr -d ' ')
  {
    printf 'POST %s HTTP/1.0\r\nHost: %s\r\n' "$path" "$address"
    printf 'Content-Type: application/pkcs10\r\nContent-Length: %s\r\n' "$length"
    if [ -n "$header" ]; then printf '%s\r\n' "$header"; fi
    printf '\r\n'
    cat "$request"
  } | timeout 30 openssl s_client -quiet -connect "$address" -servername "$server_name" \
      -verify_hostname "$server_name" -verify_return_error -CAfile "$ca" "$@" \
      > "$request.answer" 2> "$request.errors" || true
  status=$(head -n 1 "$request.answer" | tr -d '\r')
  tr -d '\r' < "$request.answer" | sed '1,/^$/d' > "$request.body"
  case "$status" in
    "HTTP/1."?" 200"*) return 0 ;;
    "HTTP/1."?" 4"*) log "$path refused: $status: $(head -c 300 "$request.body")"; return 2 ;;
    *) log "$path: no answer from $address: ${status:-$(tail -n 3 "$request.errors" | tr '\n' ' ')}"
       return 1 ;;
  esac
}

# exchange PATH HEADER [s_client options]: a new key, a request for it, and on success the
# certificate and the key replace the identity in one rename.
exchange() {
  mkdir -p "$identity_dir"
  work=$(mktemp -d "$identity_dir/.exchange.XXXXXX") || return 1
  result=0
  exchange_in "$work" "$@" || result=$?
  rm -rf "$work"
  return "$result"
}

exchange_in() {
  work="$1" path="$2" header="$3"
  shift 3
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key") \
    || return 1
  openssl req -new -key "$work/key" -subj /CN=gatehouse-host -out "$work/request" || return 1
  post "$path" "$work/request" "$header" "$@" || return $?
  if ! openssl x509 -in "$work/request.body" -noout 2> /dev/null; then
    log "$path: the answer is not a certificate"
    return 1
  fi
  certified=$(openssl x509 -in "$work/request.body" -noout -pubkey)
  if [ "$certified" != "$(openssl pkey -in "$work/key" -pubout)" ]; then
    log "$path: the certificate is not for the key made here"
    return 1
  fi
  (umask 077 && cat "$work/request.body" "$work/key" > "$work/identity") || return 1
  mv -f "$work/identity" "$identity"
}

valid() { [ -s "$identity" ] && openssl x509 -in "$identity" -noout -checkend 0 > /dev/null 2>&1; }

described() { openssl x509 -in "$identity" -noout -subject -enddate | tr '\n' ' '; }

join_host() {
  if valid; then
    log "the host has its certificate: $(described)"
    return 0
  fi
  if [ ! -s "$token_file" ]; then
    log "no join token in $token_file"
    return 1
  fi
  attempt=1
  while :; do
    result=0
    exchange "$join_path" "Authorization: Bearer $(cat "$token_file")" || result=$?
    if [ "$result" = 0 ]; then
      # It works once; on Kubernetes it is in a read-only Secret, and stays there used.
      rm -f "$token_file" 2> /dev/null || true
      log "joined: $(described)"
      return 0
    fi
    if [ "$result" = 2 ] || [ "$attempt" -ge "$attempts" ]; then
      return 1
    fi
    attempt=$((attempt + 1))
    sleep 2
  done
}

# Whether two thirds of the certificate's lifetime have passed (unreadable dates: renew).
due() {
  start=$(date -d "$(openssl x509 -in "$identity" -noout -startdate | cut -d= -f2)" +%s) || return 0
  end=$(date -d "$(openssl x509 -in "$identity" -noout -enddate | cut -d= -f2)" +%s) || return 0
  [ $(($(date +%s) - start)) -ge $(((end - start) * 2 / 3)) ]
}

renew_host() {
  if [ ! -s "$identity" ]; then
    log "no certificate to renew: the host has not joined"
    return 1
  fi
  if ! valid; then
    log "the certificate has expired and proves nothing any more: the host must join again" \
      "(a new host, or on Kubernetes a new pod)"
    return 1
  fi
  if ! due; then
    return 0
  fi
  exchange "$renew_path" "" -cert "$identity" -key "$identity" || return 1
  log "renewed: $(described)"
}

case "$mode" in
  join) join_host ;;
  renew) renew_host ;;
  renew-loop)
    sleeper=""
    # Stopped before the first sleep began there is no sleeper: `kill` with nothing to kill would
    # fail the trap under `set -e`.
    trap '[ -z "$sleeper" ] || kill "$sleeper" 2> /dev/null || true; exit 0' TERM INT
    while :; do
      (renew_host) || log "renewal failed; trying again in ${interval}s"
      sleep "$interval" &
      sleeper=$!
      wait "$sleeper" || true
    done
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
"""
