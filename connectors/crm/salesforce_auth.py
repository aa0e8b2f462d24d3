"""Salesforce access tokens for a server with nobody at the keyboard: the OAuth 2.0 JWT bearer
flow (an RS256 assertion signed with the key whose certificate the app holds) or the OAuth 2.0
client-credentials flow (the app's key and secret, run as the app's execution user).

Neither flow gives a refresh token: a new token is asked for whenever Salesforce says the
session expired. Facts and sources: connectors/crm/salesforce.md."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.crm.base import CrmAuthError
from connectors.http import ApiClient, ApiError, Closing, RetryPolicy
from core.errors import ConfigError

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce accepts an assertion whose exp is at most 3 minutes ahead.
JWT_LIFETIME_SECONDS = 180
PRODUCTION_AUDIENCE = "https://login.salesforce.com"
SANDBOX_AUDIENCE = "https://test.salesforce.com"
# The generic login hosts, which do not serve the client-credentials flow.
GENERIC_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
RETRY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=10.0, max_total_wait=60.0)

LOGIN_URL = "ABM_SALESFORCE_LOGIN_URL"
CLIENT_ID = "ABM_SALESFORCE_CLIENT_ID"
CLIENT_SECRET = "ABM_SALESFORCE_CLIENT_SECRET"
USERNAME = "ABM_SALESFORCE_USERNAME"
PRIVATE_KEY = "ABM_SALESFORCE_PRIVATE_KEY"

Flow = Literal["jwt", "client_credentials"]


@dataclass(frozen=True)
class SalesforceToken:
    """An access token and the org's instance URL every API call goes to."""

    access_token: str = field(repr=False)
    instance_url: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_audience(login_url: str) -> str:
    """The `aud` claim Salesforce expects: login.salesforce.com for production orgs and
    test.salesforce.com for sandboxes, even when the token is asked of a My Domain URL (a My
    Domain host as `aud` is refused as an invalid audience)."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return SANDBOX_AUDIENCE
    return PRODUCTION_AUDIENCE


def signed_jwt(
    private_key: rsa.RSAPrivateKey, issuer: str, subject: str, audience: str, now: float
) -> str:
    """A compact RS256 JWT (RFC 7515/7519): base64url header and claims, then the
    RSASSA-PKCS1-v1_5 SHA-256 signature of `header.claims`, as Salesforce's JWT bearer flow
    wants it. Built here because PyJWT is not a dependency; `cryptography` is."""
    header = _b64url(json.dumps({"alg": "RS256"}, separators=(",", ":")).encode())
    expires = int(now) + JWT_LIFETIME_SECONDS
    claims = {"iss": issuer, "sub": subject, "aud": audience, "exp": expires}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA key of the JWT bearer flow from an unencrypted PEM file; a ConfigError naming
    the setting (never the key) when it cannot be read."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{PRIVATE_KEY}: cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if "encrypted" in str(exc).lower() else "not a PEM private key"
        raise ConfigError(
            f"{PRIVATE_KEY}: {path} cannot be used ({reason}); give the unencrypted PEM of the "
            "RSA key whose certificate is uploaded to the Salesforce app"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{PRIVATE_KEY}: {path} is not an RSA key (the JWT flow signs RS256)")
    return key


class SalesforceAuth(Closing):
    """Asks Salesforce's token endpoint for an access token with one of the two server flows.

    `flow` is "jwt" when a username and a private key are given, else "client_credentials".
    Errors raise `CrmAuthError` naming the settings to check and Salesforce's own
    `error_description`; the secret, the key and the assertion never appear in them."""

    def __init__(
        self,
        login_url: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        username: str | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        login_url = (login_url or "").strip().rstrip("/")
        parts = urlsplit(login_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"{LOGIN_URL} {login_url!r}: use an https:// URL")
        if not client_id:
            raise ConfigError(f"Salesforce needs {CLIENT_ID}: the consumer key of the app")
        self.flow: Flow
        if username and private_key is not None:
            self.flow = "jwt"
        elif client_secret:
            if parts.hostname.lower() in GENERIC_HOSTS:
                raise ConfigError(
                    f"{LOGIN_URL} is {login_url}: the client-credentials flow is served only by "
                    "your org's My Domain login URL, like https://yourcompany.my.salesforce.com"
                )
            self.flow = "client_credentials"
        else:
            raise ConfigError(
                f"Salesforce needs {USERNAME} and {PRIVATE_KEY} (JWT bearer flow) or "
                f"{CLIENT_SECRET} (client-credentials flow) beside {CLIENT_ID}"
            )
        self.login_url = login_url
        self.client_id = client_id
        self.username = username
        self._secret = client_secret
        self._key = private_key
        self._clock = clock
        self._http = ApiClient(
            login_url,
            name="salesforce-login",
            headers={"Accept": "application/json"},
            secrets=[s for s in (client_secret,) if s],
            retry=RETRY,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Any, **seams: Any) -> SalesforceAuth:
        """The flow the settings allow: JWT bearer when the username and key are set, else
        client credentials."""
        key = None
        if settings.salesforce_username and settings.salesforce_private_key:
            key = load_private_key(settings.salesforce_private_key)
        return cls(
            settings.salesforce_login_url,
            settings.salesforce_client_id or "",
            client_secret=settings.salesforce_client_secret,
            username=settings.salesforce_username,
            private_key=key,
            **seams,
        )

    def _form(self) -> dict[str, str]:
        if self.flow == "jwt":
            assert self._key is not None and self.username
            assertion = signed_jwt(
                self._key,
                self.client_id,
                self.username,
                jwt_audience(self.login_url),
                self._clock(),
            )
            return {"grant_type": JWT_GRANT, "assertion": assertion}
        assert self._secret
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret,
        }

    def fetch_token(self) -> SalesforceToken:
        """A new access token. A token request is safe to repeat, so 5xx are retried."""
        try:
            response = self._http.request("POST", TOKEN_PATH, data=self._form(), repeatable=True)
        except ApiError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                raise self._refused(exc) from None
            raise
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        instance = body.get("instance_url") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or not isinstance(instance, str):
            raise CrmAuthError(
                "Salesforce's token endpoint answered without access_token and instance_url; "
                f"check {LOGIN_URL} ({self.login_url}) points at Salesforce"
            )
        if urlsplit(instance).scheme != "https":
            raise CrmAuthError(f"Salesforce gave an instance_url that is not https: {instance}")
        return SalesforceToken(token, instance.rstrip("/"))

    def _refused(self, exc: ApiError) -> CrmAuthError:
        """What to check for each OAuth error Salesforce documents, with its description."""
        described = "; ".join(message for _, message in exc.errors) or exc.reason
        code = described.split(":", 1)[0].strip()
        if code in ("invalid_client_id", "invalid_client"):
            check = (
                f"{CLIENT_ID} and {CLIENT_SECRET} (the app's consumer key and secret)"
                if self.flow == "client_credentials"
                else f"{CLIENT_ID} (the consumer key of the app holding the certificate)"
            )
        elif code == "invalid_grant" and self.flow == "jwt":
            check = (
                f"{USERNAME} (an active user pre-authorized for the app by profile or "
                f"permission set), {PRIVATE_KEY} (the key of the app's certificate) and "
                f"{LOGIN_URL} (a sandbox needs https://test.salesforce.com or its My Domain)"
            )
        elif code == "invalid_grant":
            check = f"the app's client-credentials 'Run As' user, and {CLIENT_ID}/{CLIENT_SECRET}"
        elif code in ("unsupported_grant_type", "invalid_request"):
            check = f"{LOGIN_URL} ({self.login_url}) and that the app enables the " + (
                "JWT bearer flow" if self.flow == "jwt" else "client-credentials flow"
            )
        else:
            check = f"{CLIENT_ID}, {LOGIN_URL} and the app's OAuth settings"
        return CrmAuthError(
            f"Salesforce refused the {self.flow.replace('_', '-')} token request "
            f"(HTTP {exc.status}: {described}). Check {check}.",
            status=exc.status,
        )

    def close(self) -> None:
        """Close the pooled connections to the login host."""
        self._http.close()
