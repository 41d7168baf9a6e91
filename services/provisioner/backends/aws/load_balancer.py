"""`certificate: acm`: an Application Load Balancer ends TLS with the ACM certificate and forwards
plain HTTP to the hosts' :80; HTTP on the load balancer is redirected to HTTPS."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from services.provisioner.backends.aws.clients import error_code
from services.provisioner.backends.aws.network import Network, tag_list
from services.provisioner.backends.base import BackendError, NotReady
from services.provisioner.hosts.plan import HTTP_PORT, HTTPS_PORT, GatewayPlan

SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


def load_balancer_name(plan: GatewayPlan) -> str:
    return plan.base_name  # at most 32 characters: gatehouse-gw-<12 hex> is 25


def check_certificate(acm: Any, arn: str) -> None:
    try:
        certificate = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    except ClientError as error:
        if error_code(error) in ("ResourceNotFoundException", "ValidationException", "InvalidArnException"):
            raise BackendError(f"aws: ACM certificate {arn} not found in this region and account") from None
        raise
    if certificate.get("Status") != "ISSUED":
        raise BackendError(f"aws: ACM certificate {arn} is {certificate.get('Status')}, not ISSUED")


def load_balancer_subnets(network: Network, plan: GatewayPlan) -> list[str]:
    subnets = network.across_zones(plan.public_ip)
    if len(subnets) < 2:
        kind = "public" if plan.public_ip else "private"
        zones = ", ".join(subnet.zone for subnet in subnets) or "none"
        raise BackendError(
            f"aws: certificate: acm needs a load balancer across at least two {kind} subnets in different "
            f"availability zones; {network.vpc_id} has {kind} subnets in: {zones}"
        )
    return [subnet.id for subnet in subnets]


def _find(elbv2: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0])
    except ClientError as error:
        if error_code(error) == "LoadBalancerNotFound":
            return None
        raise


def _target_group(elbv2: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(elbv2.describe_target_groups(Names=[name])["TargetGroups"][0])
    except ClientError as error:
        if error_code(error) == "TargetGroupNotFound":
            return None
        raise


def ensure_load_balancer(
    elbv2: Any, network: Network, plan: GatewayPlan, security_group: str, instance_ids: list[str]
) -> str:
    """Creates or corrects the load balancer, target group and listeners; returns its DNS name."""
    name = load_balancer_name(plan)
    tags = tag_list(plan.tags())
    balancer = _find(elbv2, name)
    if balancer is None:
        balancer = elbv2.create_load_balancer(
            Name=name,
            Subnets=load_balancer_subnets(network, plan),
            SecurityGroups=[security_group],
            Scheme="internet-facing" if plan.public_ip else "internal",
            Type="application",
            IpAddressType="ipv4",
            Tags=tags,
        )["LoadBalancers"][0]
        balancer = _find(elbv2, name) or balancer
    group = _target_group(elbv2, name)
    if group is None:
        group = elbv2.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=HTTP_PORT,
            VpcId=network.vpc_id,
            TargetType="instance",
            HealthCheckProtocol="HTTP",
            HealthCheckPath="/",
            # Envoy answers unknown hosts with 404: any answer means it is up.
            Matcher={"HttpCode": "200-499"},
            Tags=tags,
        )["TargetGroups"][0]
    _sync_targets(elbv2, group["TargetGroupArn"], instance_ids)
    _ensure_listeners(elbv2, balancer["LoadBalancerArn"], group["TargetGroupArn"], plan)
    state = balancer.get("State", {}).get("Code", "active")
    if state == "provisioning":
        raise NotReady("waiting for the load balancer to become active", retry_after=10.0)
    if state != "active":
        reason = balancer.get("State", {}).get("Reason", "")
        raise BackendError(f"aws: load balancer {name} is {state}: {reason}".rstrip(": "))
    return str(balancer["DNSName"])


def _sync_targets(elbv2: Any, group_arn: str, instance_ids: list[str]) -> None:
    health = elbv2.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]
    registered = {target["Target"]["Id"] for target in health}
    extra = sorted(registered - set(instance_ids))
    missing = sorted(set(instance_ids) - registered)
    if extra:
        elbv2.deregister_targets(TargetGroupArn=group_arn, Targets=[{"Id": target} for target in extra])
    if missing:
        elbv2.register_targets(
            TargetGroupArn=group_arn, Targets=[{"Id": target, "Port": HTTP_PORT} for target in missing]
        )


def _ensure_listeners(elbv2: Any, balancer_arn: str, group_arn: str, plan: GatewayPlan) -> None:
    assert plan.acm_certificate_arn is not None
    listeners = {
        listener["Port"]: listener
        for listener in elbv2.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"]
    }
    forward = [{"Type": "forward", "TargetGroupArn": group_arn}]
    certificates = [{"CertificateArn": plan.acm_certificate_arn}]
    https = listeners.get(HTTPS_PORT)
    if https is None:
        elbv2.create_listener(
            LoadBalancerArn=balancer_arn,
            Protocol="HTTPS",
            Port=HTTPS_PORT,
            SslPolicy=SSL_POLICY,
            Certificates=certificates,
            DefaultActions=forward,
        )
    elif [c["CertificateArn"] for c in https.get("Certificates", [])] != [plan.acm_certificate_arn]:
        elbv2.modify_listener(ListenerArn=https["ListenerArn"], Certificates=certificates)
    if HTTP_PORT not in listeners:
        redirect = {"Protocol": "HTTPS", "Port": str(HTTPS_PORT), "StatusCode": "HTTP_301"}
        elbv2.create_listener(
            LoadBalancerArn=balancer_arn,
            Protocol="HTTP",
            Port=HTTP_PORT,
            DefaultActions=[{"Type": "redirect", "RedirectConfig": redirect}],
        )


def delete_load_balancer(elbv2: Any, plan: GatewayPlan) -> list[str]:
    """Deletes the load balancer (its listeners go with it), then the target group."""
    name = load_balancer_name(plan)
    remaining = []
    balancer = _find(elbv2, name)
    if balancer is not None:
        elbv2.delete_load_balancer(LoadBalancerArn=balancer["LoadBalancerArn"])
    group = _target_group(elbv2, name)
    if group is not None:
        try:
            elbv2.delete_target_group(TargetGroupArn=group["TargetGroupArn"])
        except ClientError as error:
            if error_code(error) != "ResourceInUse":
                raise
            remaining.append("the target group")
    return remaining
