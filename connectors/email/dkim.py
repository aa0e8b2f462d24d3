"""DKIM signatures (RFC 6376) on the mail we hand over ourselves: SMTP and the outbox.

RFC 8058 section 4 and the Gmail and Yahoo bulk-sender rules want a DKIM signature that
covers List-Unsubscribe and List-Unsubscribe-Post, so that nobody can forge a one-click
unsubscribe onto our mail. dkimpy parses the message, canonicalises it (relaxed/relaxed)
and hashes the signed header fields exactly as its verifier will; the private-key operation
itself goes through OpenSSL (`cryptography`), because dkimpy's RSA is pure Python: 7 to 21
ms a message for a 2048-bit key, against 0.6 to 1.2 ms this way (README, "DKIM")."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from core.errors import ConfigError
from core.settings import Settings

# What the signature covers (h=), in this order: the headers a forger would change.
SIGNED_HEADERS = (
    b"from",
    b"subject",
    b"date",
    b"message-id",
    b"to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
SETTINGS = (
    ("dkim_domain", "ABM_DKIM_DOMAIN"),
    ("dkim_selector", "ABM_DKIM_SELECTOR"),
    ("dkim_private_key", "ABM_DKIM_PRIVATE_KEY"),
)
_SIGNED = frozenset(SIGNED_HEADERS)
MIN_RSA_BITS = 1024  # RFC 8301 section 3.2; verifiers (dkimpy too) refuse shorter keys
_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_SIGNATURE_LINE = 72  # base64 characters of b= per line
_FIELD = b"DKIM-Signature"

Key = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class DkimSigner:
    """Signs serialised messages for `domain` (d=) under `selector` (s=)."""

    domain: str
    selector: str
    key: Key = field(repr=False)

    @property
    def algorithm(self) -> bytes:
        """a=: by key type, RSA (RFC 6376) or Ed25519 (RFC 8463)."""
        return (
            b"ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"
        )

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF line ends, as the backends serialise it) with a DKIM-Signature
        header in front. Headers added in front later (a relay's tags) are not covered."""
        head, _, body = message.partition(b"\r\n\r\n")
        headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
        tags = [
            b"v=1",
            b"a=" + self.algorithm,
            b"c=relaxed/relaxed",
            b"d=" + self.domain.encode("ascii"),
            b"s=" + self.selector.encode("ascii"),
            b"t=%d" % int(time.time()),
            b"h=" + b" : ".join(SIGNED_HEADERS),
            b"bh=" + body_hash,
        ]
        # b= on a line of its own, so that adding its value leaves every other byte as hashed
        folded = dkim.fold(b"; ".join(tags) + b";", namelen=len(_FIELD))
        unsigned = b" " + folded + b"\r\n b="
        hasher = hashlib.sha256()
        signed = [header for header in headers if header[0].lower() in _SIGNED]
        canonical = _RELAXED.canonicalize_headers(signed)  # in order, so the same ones count
        dkim.hash_headers(hasher, _RELAXED, canonical, SIGNED_HEADERS, (_FIELD, unsigned), {})
        signature = base64.b64encode(self._sign(hasher.digest()))
        lines = (
            signature[i : i + _SIGNATURE_LINE] for i in range(0, len(signature), _SIGNATURE_LINE)
        )
        return _FIELD + b":" + unsigned + b"\r\n ".join(lines) + b"\r\n" + message

    def _sign(self, digest: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest
        return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def load_signer(domain: str, selector: str, path: Path) -> DkimSigner:
    """A signer with the key in `path` (PEM: PKCS#8, or PKCS#1 for RSA); ConfigError naming
    the setting when the domain, selector or key cannot be used."""
    for name, value in (("ABM_DKIM_DOMAIN", domain), ("ABM_DKIM_SELECTOR", selector)):
        if not _NAME.fullmatch(value):
            raise ConfigError(f"{name}={value!r} is not a DNS name (ASCII letters, digits, -, .)")
    where = f"ABM_DKIM_PRIVATE_KEY={path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{where} is encrypted: give the key unencrypted, in a file only this user can read"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where} is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}; DKIM signs with RSA or Ed25519")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            f"{where}: the RSA key has {key.key_size} bits; DKIM needs at least "
            f"{MIN_RSA_BITS} (RFC 8301), 2048 is usual"
        )
    return DkimSigner(domain.lower().rstrip("."), selector, key)


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The signer ABM_DKIM_DOMAIN, ABM_DKIM_SELECTOR and ABM_DKIM_PRIVATE_KEY describe; None
    when none is set. Some but not all of them is a configuration error naming the rest: a
    half-configured signer would send unsigned mail while looking configured."""
    values = {env: getattr(settings, name) for name, env in SETTINGS}
    given = [env for env, value in values.items() if value not in (None, "")]
    if not given:
        return None
    missing = [env for env in values if env not in given]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"{' and '.join(missing)} {verb} not set: DKIM signing needs ABM_DKIM_DOMAIN, "
            f"ABM_DKIM_SELECTOR and ABM_DKIM_PRIVATE_KEY together ({', '.join(given)} set)"
        )
    return load_signer(
        str(settings.dkim_domain), str(settings.dkim_selector), Path(settings.dkim_private_key)
    )
