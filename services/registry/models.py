"""The registry's tables: the only place desired state lives."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    system: Mapped[bool] = mapped_column(Boolean, default=False)
    # A server admin creates users and sees every project.
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Member(Base):
    __tablename__ = "members"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GatewayRow(Base):
    __tablename__ = "gateways"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # The normalized configuration (JSON of the validated model).
    spec: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # The status as the provisioner last wrote it (JSON of gatehouse.v1.GatewayStatus).
    status: Mapped[str] = mapped_column(Text, default="{}")
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    resource_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServiceRow(Base):
    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        # The port-mapping rule: one service per gateway and external port.
        UniqueConstraint("gateway_id", "gateway_port"),
        UniqueConstraint("gateway_id", "hostname"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    gateway_id: Mapped[str | None] = mapped_column(ForeignKey("gateways.id"), nullable=True, index=True)
    gateway_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hostname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The autoscaler's replica count; None: the configured one.
    desired_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spec: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(Text, default="{}")
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    resource_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReplicaRow(Base):
    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(300))
    ready: Mapped[bool] = mapped_column(Boolean, default=False)
    runner: Mapped[str] = mapped_column(String(64), default="")
    version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Of a service with probes, run by others: whether they pass against it (the provisioner's say).
    probed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    resource_version: Mapped[int] = mapped_column(BigInteger)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SecretRow(Base):
    __tablename__ = "secrets"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EnvoyStatusRow(Base):
    """What gateway_xds reports of each Envoy; written often, so outside the event feed."""

    __tablename__ = "envoy_status"
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    acked_revision: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # JSON list of the resources it refuses now: [{"type", "name", "reason"}].
    rejected_resources: Mapped[str] = mapped_column(Text, default="[]")


class Event(Base):
    """The change feed: one row per revision, the object as it was after the change."""

    __tablename__ = "events"
    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    type: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevisionCounter(Base):
    """One row; incrementing it inside a write transaction serializes revisions in commit order."""

    __tablename__ = "revision_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class TlsCertificateRow(Base):
    __tablename__ = "tls_certificates"
    __table_args__ = (UniqueConstraint("gateway_id", "hostnames"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    # JSON list of the names it covers, sorted.
    hostnames: Mapped[str] = mapped_column(String(1024))
    issuer: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    chain_pem: Mapped[str] = mapped_column(Text, default="")
    key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    renew_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resource_version: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AcmeChallengeRow(Base):
    __tablename__ = "acme_challenges"
    token: Mapped[str] = mapped_column(String(255), primary_key=True)
    key_authorization: Mapped[str] = mapped_column(String(512))
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    resource_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AcmeAccountRow(Base):
    __tablename__ = "acme_accounts"
    directory_url: Mapped[str] = mapped_column(String(512), primary_key=True)
    key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    registration_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServiceKeyRow(Base):
    __tablename__ = "service_keys"
    __table_args__ = (UniqueConstraint("service_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BackendConfigRow(Base):
    __tablename__ = "backend_configs"
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    config_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LeaseRow(Base):
    """Which copy of a process does a role's work (`provisioner`, `certificates`, ...) until when;
    `fence` grows with every change of holder, so a stale holder's writes can be refused."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    fence: Mapped[int] = mapped_column(BigInteger)
    # Seconds since the epoch on the database's clock (the copies' clocks are not compared).
    expires_at: Mapped[float] = mapped_column(Float)


class ControlPlaneSecretRow(Base):
    """Key material every copy of the control plane shares (the internal CA), the private part
    encrypted with the registry's key."""

    __tablename__ = "control_plane_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    public: Mapped[bytes] = mapped_column(LargeBinary)
    private_encrypted: Mapped[bytes] = mapped_column(LargeBinary)


class RedeemedJoinTokenRow(Base):
    """Join tokens are signed, not stored; one that was used is remembered until it expires."""

    __tablename__ = "redeemed_join_tokens"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)


class ResourceEventRow(Base):
    """One event of a gateway, service or certificate (services/registry/events.py keeps the last
    few per resource)."""

    __tablename__ = "resource_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(40), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # For a service's events, its gateway's name (so `--gateway G` shows them too).
    gateway: Mapped[str] = mapped_column(String(64), default="")
    type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    principal: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
