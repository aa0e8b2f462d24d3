"""Salesforce OAuth at the wire with respx: the JWT bearer flow's assertion (RS256 header, the
claims Salesforce documents, a signature that verifies with the public key) and the
client-credentials form; which flow the settings choose; token errors that name the setting
to check and Salesforce's description, never the secret.

Shapes checked against Salesforce Help, "OAuth 2.0 JWT Bearer Flow for Server-to-Server
Integration" (header {"alg":"RS256"}; claims iss = consumer key, sub = username, aud =
https://login.salesforce.com or https://test.salesforce.com, exp within 3 minutes; POST
grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=...) and "OAuth 2.0 Client
Credentials Flow for Server-to-Server Integration" (grant_type=client_credentials, client_id,
client_secret, sent to the My Domain URL)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.crm.base import CrmAuthError
from connectors.crm.salesforce_auth import SalesforceAuth, jwt_audience
from core.errors import ConfigError
from core.settings import Settings

MY_DOMAIN = "https://acme.my.salesforce.com"
CLIENT_ID = "3MVG9-consumer-key"
SECRET = "s3cr3t-consumer-secret-0000"
NOW = 1_717_000_000.0
TOKEN_OK = {
    "access_token": "00Dxx!token-one",
    "instance_url": "https://acme.my.salesforce.com",
    "id": "https://login.salesforce.com/id/00Dxx/005xx",
    "token_type": "Bearer",
    "issued_at": "1717000000000",
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def test_jwt_flow_posts_an_rs256_assertion_that_verifies(key: rsa.RSAPrivateKey) -> None:
    auth = SalesforceAuth(
        "https://login.salesforce.com",
        CLIENT_ID,
        username="integration@acme.example",
        private_key=key,
        clock=lambda: NOW,
    )
    with respx.mock() as router:
        route = router.post("https://login.salesforce.com/services/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN_OK)
        )
        token = auth.fetch_token()
    assert auth.flow == "jwt"
    assert (token.access_token, token.instance_url) == (TOKEN_OK["access_token"], MY_DOMAIN)
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    sent = form(request)
    assert set(sent) == {"grant_type", "assertion"}
    assert sent["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header, claims, signature = sent["assertion"].split(".")
    assert json.loads(_unb64(header)) == {"alg": "RS256"}
    assert json.loads(_unb64(claims)) == {
        "iss": CLIENT_ID,
        "sub": "integration@acme.example",
        "aud": "https://login.salesforce.com",
        "exp": int(NOW) + 180,
    }
    public = key.public_key()
    public.verify(
        _unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    with pytest.raises(InvalidSignature):
        public.verify(
            _unb64(signature), f"{header}.{claims}x".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    assert "token-one" not in repr(token)


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", "https://login.salesforce.com"),
        ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
        ("https://test.salesforce.com", "https://test.salesforce.com"),
        ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
    ],
)
def test_the_jwt_audience_is_login_or_test_even_on_my_domain(
    key: rsa.RSAPrivateKey, login_url: str, audience: str
) -> None:
    assert jwt_audience(login_url) == audience
    auth = SalesforceAuth(login_url, CLIENT_ID, username="u@acme.example", private_key=key)
    with respx.mock() as router:
        # the token is asked of the configured host (My Domain included); only aud differs
        route = router.post(f"{login_url}/services/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN_OK)
        )
        auth.fetch_token()
    claims = form(route.calls.last.request)["assertion"].split(".")[1]
    assert json.loads(_unb64(claims))["aud"] == audience


def test_client_credentials_flow_posts_id_and_secret_to_my_domain() -> None:
    auth = SalesforceAuth(MY_DOMAIN, CLIENT_ID, client_secret=SECRET)
    with respx.mock() as router:
        route = router.post(f"{MY_DOMAIN}/services/oauth2/token").mock(
            return_value=httpx.Response(200, json=TOKEN_OK)
        )
        token = auth.fetch_token()
    assert auth.flow == "client_credentials"
    assert form(route.calls.last.request) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert token.instance_url == MY_DOMAIN


def test_client_credentials_on_the_generic_login_host_is_refused_before_any_request() -> None:
    with pytest.raises(ConfigError, match=r"ABM_SALESFORCE_LOGIN_URL.*My Domain"):
        SalesforceAuth("https://login.salesforce.com", CLIENT_ID, client_secret=SECRET)


def _pem(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "sf.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_the_settings_choose_the_flow(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = _pem(tmp_path, key)
    both = Settings(
        salesforce_login_url=MY_DOMAIN,
        salesforce_client_id=CLIENT_ID,
        salesforce_client_secret=SECRET,
        salesforce_username="u@acme.example",
        salesforce_private_key=pem,
    )
    assert SalesforceAuth.from_settings(both).flow == "jwt"
    secret_only = Settings(
        salesforce_login_url=MY_DOMAIN,
        salesforce_client_id=CLIENT_ID,
        salesforce_client_secret=SECRET,
    )
    assert SalesforceAuth.from_settings(secret_only).flow == "client_credentials"
    with pytest.raises(ConfigError) as info:
        SalesforceAuth.from_settings(Settings(salesforce_client_id=CLIENT_ID))
    for name in ("USERNAME", "PRIVATE_KEY", "CLIENT_SECRET"):
        assert f"ABM_SALESFORCE_{name}" in str(info.value)
    with pytest.raises(ConfigError, match="ABM_SALESFORCE_CLIENT_ID"):
        SalesforceAuth.from_settings(Settings(salesforce_client_secret=SECRET))


def test_an_unreadable_key_names_its_setting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    for path in (bad, tmp_path / "absent.pem"):
        settings = Settings(
            salesforce_client_id=CLIENT_ID,
            salesforce_username="u@acme.example",
            salesforce_private_key=path,
        )
        with pytest.raises(ConfigError, match="ABM_SALESFORCE_PRIVATE_KEY"):
            SalesforceAuth.from_settings(settings)


@pytest.mark.parametrize(
    ("jwt", "error", "description", "setting"),
    [
        (False, "invalid_client", "invalid client credentials", "ABM_SALESFORCE_CLIENT_SECRET"),
        (False, "invalid_grant", "no client credentials user enabled", "Run As"),
        (True, "invalid_grant", "user hasn't approved this consumer", "ABM_SALESFORCE_USERNAME"),
        (True, "invalid_client_id", "client identifier invalid", "ABM_SALESFORCE_CLIENT_ID"),
        (False, "unsupported_grant_type", "grant type not supported", "ABM_SALESFORCE_LOGIN_URL"),
    ],
)
def test_token_errors_name_the_setting_and_never_the_secret(
    key: rsa.RSAPrivateKey, jwt: bool, error: str, description: str, setting: str
) -> None:
    if jwt:
        auth = SalesforceAuth(MY_DOMAIN, CLIENT_ID, username="u@acme.example", private_key=key)
    else:
        auth = SalesforceAuth(MY_DOMAIN, CLIENT_ID, client_secret=SECRET)
    with respx.mock() as router:
        router.post(f"{MY_DOMAIN}/services/oauth2/token").mock(
            return_value=httpx.Response(
                400, json={"error": error, "error_description": description}
            )
        )
        with pytest.raises(CrmAuthError) as info:
            auth.fetch_token()
    message = str(info.value)
    assert setting in message
    assert f"{error}: {description}" in message
    assert info.value.status == 400
    assert SECRET not in message and SECRET not in repr(info.value)


def test_a_token_answer_without_instance_url_is_an_auth_error() -> None:
    auth = SalesforceAuth(MY_DOMAIN, CLIENT_ID, client_secret=SECRET)
    with respx.mock() as router:
        router.post(f"{MY_DOMAIN}/services/oauth2/token").mock(
            return_value=httpx.Response(200, json={"access_token": "x"})
        )
        with pytest.raises(CrmAuthError, match="instance_url"):
            auth.fetch_token()
