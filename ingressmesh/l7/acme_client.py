"""The ACME protocol, by certbot's `acme` library (JWS, nonces, polling are its job): one
account, and one order per call of `issue`, answered by HTTP-01.

`issue` hands the key authorizations to `publish` and tells the ACME server to validate only
after `publish` returned (it returns once every proxy replica answers them).  Every failure is
an AcmeError naming the hosts and the server's reason; nothing here retries (acme_schedule.py
decides when to try again).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .acme_settings import AcmeSettings
from .cert_expiry import not_after

USER_AGENT = "ingressmesh-acme"


class AcmeError(Exception):
    """An order that did not give a certificate; `error_type` is the ACME problem type, if any."""

    def __init__(self, message: str, error_type: str = ""):
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class Issued:
    chain_pem: str  # the leaf then the intermediates
    key_pem: str
    not_after: float  # epoch seconds


def new_key_pem() -> bytes:
    """A fresh P-256 key (accounts and certificates), PKCS#8 PEM."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _why(err: Exception) -> tuple[str, str]:
    """(reason, ACME problem type) of a library or network error."""
    if isinstance(err, messages.Error):
        return f"{err.detail or err.title or err.typ} ({err.typ.rsplit(':', 1)[-1]})", err.typ
    if isinstance(err, errors.ValidationError):
        parts = [f"{a.body.identifier.value}: {c.error.detail or c.error.typ}"
                 for a in err.failed_authzrs for c in a.body.challenges if c.error is not None]
        return "the challenge was refused: " + "; ".join(parts), "urn:ietf:params:acme:error:unauthorized"
    if isinstance(err, errors.TimeoutError):
        return "the ACME server did not finish validating in time", ""
    if isinstance(err, requests.exceptions.RequestException):
        return f"the ACME server is unreachable ({type(err).__name__}: {err})", ""
    return f"{type(err).__name__}: {err}", ""


class AcmeClient:
    """One account on one ACME server; `orders` counts the orders this client placed."""

    def __init__(self, settings: AcmeSettings, account_key_pem: bytes, timeout: float = 90.0):
        self.settings, self.timeout, self.orders = settings, timeout, 0
        key = jose.JWKEC(key=serialization.load_pem_private_key(account_key_pem, password=None))
        self._net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=settings.ca_bundle or True,
                                         user_agent=USER_AGENT, timeout=30)
        self._client = None

    def _acme(self) -> client.ClientV2:
        """The directory and the account, fetched (or registered) on first use."""
        if self._client is not None:
            return self._client
        url = self.settings.directory_url
        try:
            directory = client.ClientV2.get_directory(url, self._net)
            acme = client.ClientV2(directory, self._net)
            eab = None
            if self.settings.eab:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=self._net.key.public_key(), kid=self.settings.eab_key_id,
                    hmac_key=self.settings.eab_hmac_key, directory=directory)
            registration = messages.NewRegistration.from_data(
                email=self.settings.email or None, terms_of_service_agreed=True, external_account_binding=eab)
            try:
                self._net.account = acme.new_account(registration)
            except errors.ConflictError as existing:  # the key already has an account: use it
                self._net.account = acme.query_registration(
                    messages.RegistrationResource(uri=existing.location, body=messages.Registration()))
        except Exception as err:  # noqa: BLE001 - named and handed to the schedule
            reason, kind = _why(err)
            raise AcmeError(f"ACME account at {url}: {reason}", kind) from None
        self._client = acme
        return acme

    def issue(self, hosts: tuple[str, ...], publish: Callable[[dict[str, str]], None]) -> Issued:
        """One order for `hosts`; `publish({token: key authorization})` must return only once
        every proxy answers them."""
        acme = self._acme()
        key_pem = new_key_pem()
        names = ", ".join(hosts)
        try:
            self.orders += 1
            order = acme.new_order(crypto_util.make_csr(key_pem, list(hosts)))
            pending = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeError(f"certificate for {names}: the ACME server offers no HTTP-01 challenge "
                                    f"for {authz.body.identifier.value}")
                response, validation = challb.response_and_validation(self._net.key)
                pending.append((challb, response, validation))
            publish({c.chall.encode("token"): v for c, _, v in pending})
            for challb, response, _ in pending:
                acme.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
            done = acme.poll_and_finalize(order, deadline)
        except AcmeError:
            raise
        except Exception as err:  # noqa: BLE001 - named and handed to the schedule
            reason, kind = _why(err)
            raise AcmeError(f"certificate for {names}: {reason}", kind) from None
        return Issued(done.fullchain_pem, key_pem.decode(), not_after(done.fullchain_pem))
