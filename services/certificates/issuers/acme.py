"""Certificates from any ACME CA (Let's Encrypt by default) with the `acme` library.

The library is synchronous; its network calls run in worker threads. The account key is made once
per directory and kept (encrypted) by the registry; valid authorizations are reused by the CA.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence

import grpc
from acme import challenges, client, errors, messages
from acme.crypto_util import make_csr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWK, JWKRSA

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from services.certificates.issuers import acme_polling
from services.certificates.issuers.base import ChallengeSolver, IssuedCertificate, IssueError
from services.certificates.settings import CertificateSettings

USER_AGENT = "gatehouse"
ORDER_TIMEOUT_SECONDS = 90


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class AcmeIssuer:
    def __init__(
        self, settings: CertificateSettings, stubs: Stubs, solvers: dict[str, ChallengeSolver]
    ) -> None:
        self._settings = settings
        self._stubs = stubs
        self._solvers = solvers
        self._client: client.ClientV2 | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._settings.directory_url

    def _network(self, key: JWK, account: messages.RegistrationResource | None) -> client.ClientNetwork:
        verify: bool | str = self._settings.ca_bundle or True
        return client.ClientNetwork(key, account=account, user_agent=USER_AGENT, verify_ssl=verify)  # type: ignore[arg-type]

    async def _account_client(self) -> client.ClientV2:
        """The ACME client with this directory's account, made and registered on first use."""
        async with self._lock:
            if self._client is not None:
                return self._client
            url = self._settings.directory_url
            try:
                stored = await self._stubs.tls_certificates.GetAccount(
                    registry_pb2.GetAcmeAccountRequest(directory_url=url)
                )
                key = JWK.json_loads(stored.key_json)
                account = messages.RegistrationResource.json_loads(stored.registration_json)
                network = self._network(key, account)
                directory = await asyncio.to_thread(client.ClientV2.get_directory, url, network)
                self._client = client.ClientV2(directory, network)
                return self._client
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
            network = self._network(key, None)
            directory = await asyncio.to_thread(client.ClientV2.get_directory, url, network)
            acme_client = client.ClientV2(directory, network)
            registration = await asyncio.to_thread(
                acme_client.new_account, self._registration(directory, key)
            )
            await self._stubs.tls_certificates.PutAccount(
                registry_pb2.AcmeAccount(
                    directory_url=url, key_json=key.json_dumps(), registration_json=registration.json_dumps()
                )
            )
            self._client = acme_client
            return acme_client

    def _registration(self, directory: messages.Directory, key: JWK) -> messages.NewRegistration:
        binding = None
        if self._settings.eab_kid and self._settings.eab_hmac_key:
            binding = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(),
                kid=self._settings.eab_kid,
                hmac_key=self._settings.eab_hmac_key,
                directory=directory,
            )
        return messages.NewRegistration.from_data(
            email=self._settings.email, terms_of_service_agreed=True, external_account_binding=binding
        )

    async def issue(
        self, gateway: resources_pb2.Gateway, hostnames: Sequence[str], solver: str
    ) -> IssuedCertificate:
        try:
            acme_client = await self._account_client()
            if solver not in self._solvers:
                raise IssueError(f"no {solver} challenge solver is configured on this server")
            return await self._issue(acme_client, gateway, hostnames, self._solvers[solver])
        except errors.Error as error:
            raise IssueError(f"{self.name}: {error}") from None
        except messages.Error as error:
            raise IssueError(f"{self.name}: {error.detail or error.typ}") from None
        except OSError as error:
            raise IssueError(f"cannot reach the ACME server {self.name}: {error}") from None

    async def _issue(
        self,
        acme_client: client.ClientV2,
        gateway: resources_pb2.Gateway,
        hostnames: Sequence[str],
        solver: ChallengeSolver,
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(_pem(key), list(hostnames))
        order = await asyncio.to_thread(acme_client.new_order, csr)
        presented: list[tuple[str, str]] = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                challenge = self._pick(authorization, solver.kind)
                response, validation = challenge.response_and_validation(acme_client.net.key)
                hostname = authorization.body.identifier.value
                if authorization.body.wildcard:
                    hostname = f"*.{hostname}"
                token = challenge.chall.encode("token")
                await solver.present(gateway, hostname, token, validation)
                presented.append((hostname, token))
                await asyncio.to_thread(acme_client.answer_challenge, challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT_SECONDS)
            order = await asyncio.to_thread(acme_polling.poll_and_finalize, acme_client, order, deadline)
        finally:
            for hostname, token in presented:
                await solver.cleanup(gateway, hostname, token)
        return IssuedCertificate.from_pem(order.fullchain_pem, _pem(key).decode())

    @staticmethod
    def _pick(authorization: messages.AuthorizationResource, kind: str) -> messages.ChallengeBody:
        wanted = {"http-01": challenges.HTTP01, "dns-01": challenges.DNS01}[kind]
        for challenge in authorization.body.challenges:
            if isinstance(challenge.chall, wanted):
                return challenge
        offered = ", ".join(sorted({c.chall.typ for c in authorization.body.challenges}))
        raise IssueError(
            f"the CA offers no {kind} challenge for {authorization.body.identifier.value} ({offered})"
        )
