"""Attacks on gatepass access tokens, written from public sources.

Sources (cited per test):

* RFC 8725, JSON Web Token Best Current Practices (BCP 225).
* RFC 7515 (JWS) and RFC 7519 (JWT); RFC 9068 (JWT access tokens); RFC 6750 (Bearer).
* OWASP "JSON Web Token for Java" cheat sheet and the OWASP WSTG "Testing JSON Web Tokens"
  (WSTG-SESS-10).
* CVE-2015-9235 (node-jsonwebtoken: HS256 verified with an RSA public key),
  CVE-2016-10555 (jwt-simple: algorithm confusion), CVE-2022-29217 (PyJWT: HMAC keyed with
  an OpenSSH/PEM public key), CVE-2022-21449 (Java "psychic signatures": ECDSA r = s = 0),
  CVE-2024-33663 (python-jose: algorithm confusion with OpenSSH ECDSA keys),
  CVE-2023-48238 (json-web-token: algorithm taken from the untrusted header),
  CVE-2018-0114 (node-jose: trusting an embedded ``jwk``).

Every attack goes over HTTP to ``GET /auth/me`` and must get 401 problem+json with
``WWW-Authenticate: Bearer error="invalid_token"``, a fixed body that echoes no part of
the token, and must leave the genuine token working.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import get_default_algorithms
from starlette.testclient import TestClient

from gatepass.tokens import MAX_TOKEN_BYTES
from tests.conftest import PASSWORD, FakeClock, login, register, token_login

ASYMMETRIC = ("EdDSA", "ES256", "RS256")
ALL_ALGORITHMS = (*ASYMMETRIC, "HS256")
INVALID_TOKEN = 'Bearer error="invalid_token"'
PROBLEM_KEYS = {"type", "title", "status", "detail"}
#: Settings defaults the claim tests rely on.
TTL = 900
LEEWAY = 10
_PYJWT = get_default_algorithms()


# compact JWS helpers -------------------------------------------------------------


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def json_segment(value: Any) -> str:
    """Encode like PyJWT does (compact separators), so untouched claims round-trip."""
    return b64e(json.dumps(value, separators=(",", ":")).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return json.loads(b64d(header)), json.loads(b64d(payload)), b64d(signature)


def non_canonical(segment: str) -> str:
    """The same bytes, encoded with the unused trailing bits set (RFC 4648 §3.5)."""
    assert len(segment) % 4 in (2, 3), "segment has no unused bits"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(segment[-1])
    altered = segment[:-1] + alphabet[last | 1]
    assert altered != segment  # canonical trailing bits are zero, so bit 0 was clear
    assert b64d(altered) == b64d(segment)
    return altered


def hs256(secret: bytes, signing_input: str) -> str:
    return b64e(hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest())


def leaks(credential: str, body: str, window: int = 8) -> bool:
    """Does any ``window``-character run of the credential appear in the body?"""
    if len(credential) < window:
        return bool(credential.strip()) and credential in body
    return any(credential[i : i + window] in body for i in range(len(credential) - window + 1))


# attacker keys -------------------------------------------------------------------


@cache
def attacker_private_key(alg: str) -> Any:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def attacker_sign(alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{json_segment(header)}.{json_segment(claims)}"
    signature = _PYJWT[alg].sign(signing_input.encode("ascii"), attacker_private_key(alg))
    return f"{signing_input}.{b64e(signature)}"


def attacker_jwk(alg: str) -> dict[str, Any]:
    public = attacker_private_key(alg).public_key()
    return {**_PYJWT[alg].to_jwk(public, as_dict=True), "kid": "attacker", "alg": alg}


def attacker_certificate_der(alg: str) -> bytes:
    key = attacker_private_key(alg)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatepass-attacker")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, None if alg == "EdDSA" else hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


# the deployment under attack -----------------------------------------------------


@dataclass
class Deployment:
    client: TestClient
    alg: str
    access_token: str
    refresh_token: str

    @property
    def header(self) -> dict[str, Any]:
        return parts(self.access_token)[0]

    @property
    def claims(self) -> dict[str, Any]:
        return parts(self.access_token)[1]

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    def me(self, authorization: str | bytes) -> httpx.Response:
        return self.client.get("/auth/me", headers={"Authorization": authorization})

    def jwks(self) -> dict[str, Any]:
        response = self.client.get("/.well-known/jwks.json")
        assert response.status_code == 200
        return dict(response.json())

    def public_jwk(self) -> dict[str, Any]:
        (jwk,) = [k for k in self.jwks()["keys"] if k["kid"] == self.kid]
        return dict(jwk)

    def insider_sign(self, signing_input: str) -> str:
        """Sign with the deployment's own current key (a misconfigured or hostile insider)."""
        key = self.client.app.state.gatepass.keys.signing_key()  # type: ignore[attr-defined]
        assert key.kid == self.kid
        signature = _PYJWT[key.alg].sign(signing_input.encode("ascii"), key.signing_key)
        return f"{signing_input}.{b64e(signature)}"

    def mint(
        self, header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None
    ) -> str:
        """A token signed by the real key; header and claims default to the genuine ones."""
        header = self.header if header is None else header
        claims = self.claims if claims is None else claims
        return self.insider_sign(f"{json_segment(header)}.{json_segment(claims)}")

    def assert_rejected(
        self, authorization: str | bytes, *, absent: tuple[str, ...] = ()
    ) -> httpx.Response:
        response = self.me(authorization)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"] == INVALID_TOKEN
        body = response.json()
        assert set(body) == PROBLEM_KEYS
        assert body["status"] == 401
        text = (
            authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
        )
        assert not leaks(text, response.text), response.text
        for fragment in absent:
            assert fragment not in response.text
        genuine = self.me(f"Bearer {self.access_token}")
        assert genuine.status_code == 200, genuine.text
        assert genuine.json()["method"] == "bearer"
        return response


@pytest.fixture
def deploy(make_client: Callable[..., TestClient]) -> Callable[..., Deployment]:
    def make(alg: str, **env: str) -> Deployment:
        client = make_client(jwt_algorithm=alg, **env)
        register(client)
        pair = token_login(client)
        deployment = Deployment(client, alg, pair["access_token"], pair["refresh_token"])
        assert deployment.header == {"alg": alg, "kid": deployment.kid, "typ": "at+jwt"}
        assert deployment.me(f"Bearer {deployment.access_token}").status_code == 200
        return deployment

    return make


# controls: the forging helpers are faithful --------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_reencoding_untouched_claims_reproduces_the_genuine_token(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """Control for the tampering tests: our encoder reproduces the server's segments."""
    dep = deploy(alg)
    header_b64, payload_b64, signature_b64 = dep.access_token.split(".")
    assert json_segment(dep.header) == header_b64
    assert json_segment(dep.claims) == payload_b64
    rebuilt = f"{json_segment(dep.header)}.{json_segment(dep.claims)}.{signature_b64}"
    assert dep.me(f"Bearer {rebuilt}").status_code == 200


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_insider_minted_token_with_genuine_header_and_claims_is_accepted(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """Control for the claim tests: a token minted with the real key and good claims passes."""
    dep = deploy(alg)
    assert dep.me(f"Bearer {dep.mint()}").status_code == 200


def test_hs256_forger_with_the_real_secret_is_accepted(
    deploy: Callable[..., Deployment],
) -> None:
    """Control for the confusion tests: the hmac-built HS256 token is right when keyed right."""
    dep = deploy("HS256")
    secret = dep.client.app.state.gatepass.keys.signing_key().signing_key  # type: ignore[attr-defined]
    signing_input = f"{json_segment(dep.header)}.{json_segment(dep.claims)}"
    forged = f"{signing_input}.{hs256(secret, signing_input)}"
    assert forged == dep.access_token
    assert dep.me(f"Bearer {forged}").status_code == 200


# alg "none" --------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("none", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "original"])
def test_alg_none_in_any_case_is_rejected(
    deploy: Callable[..., Deployment], alg: str, none: str, signature: str
) -> None:
    """RFC 8725 §2.1 and §3.1; OWASP cheat sheet "None hashing algorithm"; the 2015
    Auth0 disclosure of ``alg: none`` acceptance (CVE-2015-9235 family)."""
    dep = deploy(alg)
    head = json_segment({"alg": none, "kid": dep.kid, "typ": "at+jwt"})
    original = dep.access_token.split(".")[2]
    sig = "" if signature == "empty" else original
    dep.assert_rejected(f"Bearer {head}.{json_segment(dep.claims)}.{sig}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_alg_none_without_kid_or_typ_is_rejected(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 7519 §6.1 unsecured JWT, the bare form used by jwt_tool's ``-X a``."""
    dep = deploy(alg)
    dep.assert_rejected(f"Bearer {json_segment({'alg': 'none'})}.{json_segment(dep.claims)}.")


# algorithm confusion: the public key as an HMAC secret ---------------------------


def _der_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def public_key_forms(jwk: dict[str, Any]) -> dict[str, bytes]:
    """Every encoding of the published public key an attacker might try as an HMAC secret."""
    alg = jwk["alg"]
    public = _PYJWT[alg].from_jwk(json.dumps(jwk))
    spki_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms = {
        "pem-spki": spki_pem,
        "pem-spki-no-newline": spki_pem.strip(),
        "der-spki": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk-as-published": json.dumps(jwk).encode(),
        "jwk-compact": json.dumps(jwk, separators=(",", ":")).encode(),
        "jwk-sorted": json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode(),
    }
    if isinstance(public, ed25519.Ed25519PublicKey):
        forms["raw"] = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        forms["raw-b64url-x"] = jwk["x"].encode()
    elif isinstance(public, ec.EllipticCurvePublicKey):
        forms["raw"] = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        forms["raw-compressed"] = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        forms["raw-x-y"] = b64d(jwk["x"]) + b64d(jwk["y"])
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        forms["pem-pkcs1"] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
        forms["der-pkcs1"] = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        forms["raw"] = _der_int(public.public_numbers().n)
        forms["raw-b64url-n"] = jwk["n"].encode()
    return forms


_COMMON_FORMS = (
    "pem-spki",
    "pem-spki-no-newline",
    "der-spki",
    "openssh",
    "jwk-as-published",
    "jwk-compact",
    "jwk-sorted",
    "raw",
)
CONFUSION_CASES = [
    *[("EdDSA", form) for form in (*_COMMON_FORMS, "raw-b64url-x")],
    *[("ES256", form) for form in (*_COMMON_FORMS, "raw-compressed", "raw-x-y")],
    *[("RS256", form) for form in (*_COMMON_FORMS, "pem-pkcs1", "der-pkcs1", "raw-b64url-n")],
]


@pytest.mark.parametrize(("alg", "form"), CONFUSION_CASES)
def test_hs256_keyed_with_the_published_public_key_is_rejected(
    deploy: Callable[..., Deployment], alg: str, form: str
) -> None:
    """RFC 8725 §2.1/§3.1 (algorithm verification); OWASP WSTG-SESS-10 "algorithm
    confusion"; CVE-2015-9235, CVE-2016-10555, CVE-2022-29217 (PyJWT, OpenSSH/PEM keys),
    CVE-2024-33663 (python-jose, ECDSA keys), CVE-2023-48238 (alg from the header)."""
    dep = deploy(alg)
    secret = public_key_forms(dep.public_jwk())[form]
    for hmac_alg in ("HS256", "hs256"):
        signing_input = (
            f"{json_segment({'alg': hmac_alg, 'kid': dep.kid, 'typ': 'at+jwt'})}."
            f"{json_segment(dep.claims)}"
        )
        dep.assert_rejected(f"Bearer {signing_input}.{hs256(secret, signing_input)}")


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_header_alg_switched_to_another_asymmetric_algorithm_is_rejected(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 8725 §3.1: the algorithm is pinned by the key, never chosen by the header;
    CVE-2023-48238. The attacker signs with its own key under another alg but our kid."""
    dep = deploy(alg)
    for other in ASYMMETRIC:
        if other != alg:
            header = {"alg": other, "kid": dep.kid, "typ": "at+jwt"}
            dep.assert_rejected(f"Bearer {attacker_sign(other, header, dep.claims)}")


# untrusted key references in the header ------------------------------------------


@pytest.mark.parametrize("alg", ASYMMETRIC)
@pytest.mark.parametrize("kid", ["ours", "attacker", "absent"])
def test_embedded_jwk_of_the_attacker_is_not_trusted(
    deploy: Callable[..., Deployment], alg: str, kid: str
) -> None:
    """RFC 8725 §3.10 (do not trust key references); CVE-2018-0114 (node-jose embedded
    ``jwk``); OWASP WSTG-SESS-10 "embedded JWK"."""
    dep = deploy(alg)
    header: dict[str, Any] = {"alg": alg, "typ": "at+jwt", "jwk": attacker_jwk(alg)}
    if kid != "absent":
        header["kid"] = dep.kid if kid == "ours" else "attacker"
    dep.assert_rejected(f"Bearer {attacker_sign(alg, header, dep.claims)}")


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_embedded_jwk_header_is_refused_even_when_signed_by_the_real_key(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 8725 §3.10 and RFC 7515 §4.1.3: gatepass allows only alg, kid and typ."""
    dep = deploy(alg)
    dep.assert_rejected(f"Bearer {dep.mint({**dep.header, 'jwk': dep.public_jwk()})}")


@dataclass
class KeyServer:
    url: str
    requests: list[str]


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    """An attacker-controlled HTTP server on 127.0.0.1 that records every request."""
    requests: list[str] = []
    body = json.dumps({"keys": [attacker_jwk(alg) for alg in ASYMMETRIC]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield KeyServer(f"http://{host!s}:{port}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_key_server_records_requests(key_server: KeyServer) -> None:
    """Control: the recording server does see a fetch, so "no request" below means something."""
    response = httpx.get(f"{key_server.url}/jwks.json")
    assert response.status_code == 200
    assert key_server.requests == ["/jwks.json"]


@pytest.mark.parametrize("alg", ASYMMETRIC)
@pytest.mark.parametrize("param", ["jku", "x5u"])
@pytest.mark.parametrize("signer", ["attacker", "server"])
def test_jku_and_x5u_are_never_fetched(
    deploy: Callable[..., Deployment],
    key_server: KeyServer,
    alg: str,
    param: str,
    signer: str,
) -> None:
    """RFC 8725 §3.10 (SSRF, untrusted key URLs); RFC 7515 §4.1.2/§4.1.5; OWASP
    WSTG-SESS-10 "jku/x5u header injection"."""
    dep = deploy(alg)
    url = f"{key_server.url}/{param}.json"
    if signer == "attacker":
        header = {"alg": alg, "kid": "attacker", "typ": "at+jwt", param: url}
        token = attacker_sign(alg, header, dep.claims)
    else:
        token = dep.mint({**dep.header, param: url})
    dep.assert_rejected(f"Bearer {token}", absent=(url,))
    assert key_server.requests == []


@pytest.mark.parametrize("alg", ASYMMETRIC)
@pytest.mark.parametrize("kid", ["ours", "attacker"])
def test_x5c_certificate_of_the_attacker_is_not_trusted(
    deploy: Callable[..., Deployment], alg: str, kid: str
) -> None:
    """RFC 8725 §3.10; RFC 7515 §4.1.6: a self-signed chain in the token proves nothing."""
    dep = deploy(alg)
    header = {
        "alg": alg,
        "kid": dep.kid if kid == "ours" else "attacker",
        "typ": "at+jwt",
        "x5c": [base64.b64encode(attacker_certificate_der(alg)).decode("ascii")],
    }
    dep.assert_rejected(f"Bearer {attacker_sign(alg, header, dep.claims)}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["x-gatepass"], []])
def test_crit_header_is_refused_even_with_a_valid_signature(
    deploy: Callable[..., Deployment], alg: str, crit: list[str]
) -> None:
    """RFC 7515 §4.1.11: unknown critical extensions must make the JWS invalid; RFC 7797
    ``b64: false`` would change what is signed."""
    dep = deploy(alg)
    header: dict[str, Any] = {**dep.header, "crit": crit}
    if crit == ["b64"]:
        header["b64"] = False
    dep.assert_rejected(f"Bearer {dep.mint(header)}")


# kid abuse ----------------------------------------------------------------------

KID_INJECTIONS = {
    "path-traversal": ("../../../../dev/null", b""),
    "path-traversal-absolute": ("/dev/null", b""),
    "path-traversal-proc": ("../../../../proc/self/environ", b""),
    "sql-or": ("' OR '1'='1", b"1"),
    "sql-union": ("x' UNION SELECT 'secret' -- ", b"secret"),
    "sql-comment": ("'; DROP TABLE signing_keys; --", b""),
    "command": ("key|id", b""),
    "empty": ("", b""),
}


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("case", list(KID_INJECTIONS))
def test_kid_injection_with_a_guessable_hmac_secret_is_rejected(
    deploy: Callable[..., Deployment], alg: str, case: str
) -> None:
    """OWASP WSTG-SESS-10 "kid manipulation"; RFC 8725 §3.10: a kid that points at
    ``/dev/null`` (empty key) or an SQL injection yielding a known secret."""
    dep = deploy(alg)
    kid, secret = KID_INJECTIONS[case]
    for header_alg in ("HS256", alg):
        signing_input = (
            f"{json_segment({'alg': header_alg, 'kid': kid, 'typ': 'at+jwt'})}."
            f"{json_segment(dep.claims)}"
        )
        dep.assert_rejected(f"Bearer {signing_input}.{hs256(secret, signing_input)}")
    # the key ring survived: the JWKS still lists our key (HS256 publishes none)
    if alg != "HS256":
        assert dep.kid in {k["kid"] for k in dep.jwks()["keys"]}


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("kid", [None, 7, ["x"], {"kid": "x"}, True])
def test_kid_that_is_not_a_string_is_rejected(
    deploy: Callable[..., Deployment], alg: str, kid: Any
) -> None:
    """RFC 7515 §4.1.4: ``kid`` is a string; type confusion in the key lookup."""
    dep = deploy(alg)
    dep.assert_rejected(f"Bearer {dep.mint({'alg': alg, 'kid': kid, 'typ': 'at+jwt'})}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_kid_of_another_key_of_the_ring_is_rejected(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 8725 §3.1: the signature must verify under the key named by kid. Here the kid
    of the published, not yet signing ``next`` key over a signature by the current key."""
    dep = deploy(alg)
    keys = list(dep.client.app.state.gatepass.keys.keys())  # type: ignore[attr-defined]
    others = [k.kid for k in keys if k.kid != dep.kid]
    assert others, "the ring should hold a next key"
    for other in others:
        dep.assert_rejected(f"Bearer {dep.mint({**dep.header, 'kid': other})}")


# signatures ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_stripped_signature_is_rejected(deploy: Callable[..., Deployment], alg: str) -> None:
    """RFC 8725 §2.1; OWASP WSTG-SESS-10 "signature stripping": empty third segment,
    two segments only."""
    dep = deploy(alg)
    header_b64, payload_b64, _ = dep.access_token.split(".")
    dep.assert_rejected(f"Bearer {header_b64}.{payload_b64}.")
    dep.assert_rejected(f"Bearer {header_b64}.{payload_b64}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("source", ["other-user", "same-user-other-login"])
def test_signature_swapped_in_from_another_token_is_rejected(
    deploy: Callable[..., Deployment], alg: str, source: str
) -> None:
    """OWASP WSTG-SESS-10: a valid signature of another token over our header+payload."""
    dep = deploy(alg)
    email = "ada@example.com"
    if source == "other-user":
        email = "bob@example.com"
        register(dep.client, email)
    other = token_login(dep.client, email)["access_token"]
    other_signature = other.split(".")[2]
    header_b64, payload_b64, own_signature = dep.access_token.split(".")
    assert other_signature != own_signature
    dep.assert_rejected(f"Bearer {header_b64}.{payload_b64}.{other_signature}")


def _ecdsa_order() -> int:
    return 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


ZERO_SIGNATURES = {
    "EdDSA": {"zeros-64": bytes(64)},
    "ES256": {
        "zeros-64": bytes(64),
        "der-r0-s0": bytes.fromhex("3006020100020100"),
        "r-s-equal-n": _ecdsa_order().to_bytes(32, "big") * 2,
        "zeros-32": bytes(32),
    },
    "RS256": {"zeros-256": bytes(256), "one": (1).to_bytes(256, "big")},
    "HS256": {"zeros-32": bytes(32)},
}


@pytest.mark.parametrize(
    ("alg", "case"), [(alg, case) for alg, cases in ZERO_SIGNATURES.items() for case in cases]
)
def test_all_zero_and_degenerate_signatures_are_rejected(
    deploy: Callable[..., Deployment], alg: str, case: str
) -> None:
    """CVE-2022-21449 ("psychic signatures": ECDSA r = s = 0 accepted by Java 15-18); the
    same degenerate values for EdDSA (RFC 8032 §5.1.7), RSA and HMAC."""
    dep = deploy(alg)
    header_b64, payload_b64, _ = dep.access_token.split(".")
    signature = b64e(ZERO_SIGNATURES[alg][case])
    dep.assert_rejected(f"Bearer {header_b64}.{payload_b64}.{signature}")


# tampered claims ----------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("change", ["roles-admin", "roles-added-admin", "sub-other", "exp-later"])
def test_tampered_claims_with_the_original_signature_are_rejected(
    deploy: Callable[..., Deployment], alg: str, change: str
) -> None:
    """RFC 7515 §5.2 (integrity); OWASP WSTG-SESS-10 "payload tampering"."""
    dep = deploy(alg)
    claims = dep.claims
    if change == "roles-admin":
        claims["roles"] = ["admin"]
    elif change == "roles-added-admin":
        claims["roles"] = [*claims["roles"], "admin"]
    elif change == "sub-other":
        register(dep.client, "bob@example.com")
        bob = token_login(dep.client, "bob@example.com")["access_token"]
        claims["sub"] = parts(bob)[1]["sub"]
        assert claims["sub"] != dep.claims["sub"]
    else:
        claims["exp"] += 86_400
    header_b64, _, signature_b64 = dep.access_token.split(".")
    response = dep.assert_rejected(f"Bearer {header_b64}.{json_segment(claims)}.{signature_b64}")
    assert "admin" not in response.text


# time ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_expired_token_is_rejected_after_ttl_plus_leeway(
    deploy: Callable[..., Deployment], clock: FakeClock, alg: str
) -> None:
    """RFC 7519 §4.1.4 (exp); RFC 8725 §3.10 and OWASP: enforce expiry with a small leeway."""
    dep = deploy(alg)
    expired = dep.access_token
    clock.advance(TTL + LEEWAY - 1)
    assert dep.me(f"Bearer {expired}").status_code == 200  # still inside the leeway
    clock.advance(2)
    dep.access_token = token_login(dep.client)["access_token"]  # the fresh genuine token
    dep.assert_rejected(f"Bearer {expired}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_iat_and_nbf_in_the_future_beyond_leeway_are_rejected(
    deploy: Callable[..., Deployment], clock: FakeClock, alg: str, claim: str
) -> None:
    """RFC 7519 §4.1.5/§4.1.6; RFC 8725 §3.10. Minted with the real key: models a
    misconfigured clock on a signing node."""
    dep = deploy(alg)
    now = int(clock())
    within = {**dep.claims, claim: now + LEEWAY - 1}
    assert dep.me(f"Bearer {dep.mint(claims=within)}").status_code == 200
    beyond = {**dep.claims, claim: now + LEEWAY + 60}
    dep.assert_rejected(f"Bearer {dep.mint(claims=beyond)}")


# another deployment ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("issuer", ["same", "different"])
def test_token_of_another_deployment_is_rejected(
    deploy: Callable[..., Deployment], tmp_path: Path, alg: str, issuer: str
) -> None:
    """RFC 8725 §3.8 (validate issuer and audience) and §2.8 (cross-JWT confusion): a
    genuine token of another gatepass deployment, same email, own keys."""
    dep = deploy(alg)
    env = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"}
    if issuer == "different":
        env["issuer"] = "https://other.example"
    other = deploy(alg, **env)
    assert other.claims["iss"] == (
        dep.claims["iss"] if issuer == "same" else "https://other.example"
    )
    assert other.kid != dep.kid
    dep.assert_rejected(f"Bearer {other.access_token}")
    # the other deployment's token with our kid written into its header
    _, payload_b64, signature_b64 = other.access_token.split(".")
    dep.assert_rejected(f"Bearer {json_segment(dep.header)}.{payload_b64}.{signature_b64}")


# header and claim checks on tokens signed by the real key ------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("typ", ["JWT", "jwt", "missing", "", "JOSE", "at+jwt ", 1, None])
def test_wrong_typ_is_rejected(deploy: Callable[..., Deployment], alg: str, typ: Any) -> None:
    """RFC 8725 §3.11 (explicit typing) and RFC 9068 §2.1 (``typ: at+jwt``): an ID token
    or other JWT signed by the same key must not pass as an access token."""
    dep = deploy(alg)
    header = dict(dep.header)
    if typ == "missing":
        del header["typ"]
    else:
        header["typ"] = typ
    dep.assert_rejected(f"Bearer {dep.mint(header)}")


WRONG_CLAIMS: dict[str, Callable[[dict[str, Any]], None]] = {
    "aud-other": lambda c: c.update(aud="other-api"),
    "aud-list-other": lambda c: c.update(aud=["other-api"]),
    "aud-empty": lambda c: c.update(aud=""),
    "aud-int": lambda c: c.update(aud=1),
    "iss-other": lambda c: c.update(iss="https://evil.example"),
    "iss-trailing-slash": lambda c: c.update(iss=c["iss"] + "/"),
    "iss-list": lambda c: c.update(iss=[c["iss"]]),
    **{
        f"missing-{name}": (lambda n: lambda c: c.pop(n))(name)
        for name in ("iss", "aud", "sub", "exp", "iat", "jti", "sid", "roles")
    },
    "sub-int": lambda c: c.update(sub=1),
    "sub-empty": lambda c: c.update(sub=""),
    "sub-list": lambda c: c.update(sub=[c["sub"]]),
    "roles-string": lambda c: c.update(roles="admin"),
    "roles-int-member": lambda c: c.update(roles=[1]),
    "roles-null": lambda c: c.update(roles=None),
    "exp-string": lambda c: c.update(exp=str(c["exp"])),
    "exp-bool": lambda c: c.update(exp=True),
    "exp-null": lambda c: c.update(exp=None),
    "iat-string": lambda c: c.update(iat=str(c["iat"])),
    "iat-bool": lambda c: c.update(iat=False),
    "nbf-string": lambda c: c.update(nbf="0"),
    "jti-int": lambda c: c.update(jti=1),
    "sid-int": lambda c: c.update(sid=1),
}


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("case", list(WRONG_CLAIMS))
def test_wrong_missing_or_mistyped_claims_are_rejected(
    deploy: Callable[..., Deployment], alg: str, case: str
) -> None:
    """RFC 7519 §4.1 and §7.2; RFC 9068 §2.2 (required claims); RFC 8725 §3.8 (issuer and
    audience); OWASP: validate every claim's presence and type."""
    dep = deploy(alg)
    claims = dep.claims
    WRONG_CLAIMS[case](claims)
    dep.assert_rejected(f"Bearer {dep.mint(claims=claims)}")


# refresh and access tokens are not interchangeable --------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_refresh_token_used_as_access_token_is_rejected(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 8725 §2.8/§3.12 (token substitution); RFC 9700 §4.14."""
    dep = deploy(alg)
    dep.assert_rejected(f"Bearer {dep.refresh_token}")
    refreshed = dep.client.post("/auth/refresh", json={"refresh_token": dep.refresh_token})
    assert refreshed.status_code == 200  # and the refresh token itself was not consumed


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_access_token_used_as_refresh_token_is_rejected(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """RFC 8725 §2.8 (substitution); DESIGN §3: 401 for any string that is not a live
    refresh token."""
    dep = deploy(alg)
    response = dep.client.post("/auth/refresh", json={"refresh_token": dep.access_token})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert not leaks(dep.access_token, response.text)
    assert dep.me(f"Bearer {dep.access_token}").status_code == 200
    refreshed = dep.client.post("/auth/refresh", json={"refresh_token": dep.refresh_token})
    assert refreshed.status_code == 200


# size ---------------------------------------------------------------------------


def _padded_token(dep: Deployment, target: int, *, above: bool) -> str:
    """A really signed token whose length is the largest <= target, or smallest > target."""
    base = len(dep.mint(claims={**dep.claims, "pad": ""}))
    estimate = (target - base) * 3 // 4
    best: str | None = None
    for size in range(estimate - 12, estimate + 12):
        token = dep.mint(claims={**dep.claims, "pad": "x" * max(size, 0)})
        if above and len(token) > target:
            return token
        if not above and len(token) <= target:
            best = token
    assert best is not None
    return best


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_token_over_8_kib_is_rejected_even_with_a_valid_signature(
    deploy: Callable[..., Deployment], alg: str
) -> None:
    """CWE-400 and CVE-2024-33664 (python-jose "JWT bomb": unbounded token processing);
    OWASP WSTG-SESS-10. Control: a validly signed token of at most 8 KiB still passes."""
    dep = deploy(alg)
    fits = _padded_token(dep, MAX_TOKEN_BYTES, above=False)
    assert MAX_TOKEN_BYTES - 4 <= len(fits) <= MAX_TOKEN_BYTES
    assert dep.me(f"Bearer {fits}").status_code == 200
    too_big = _padded_token(dep, MAX_TOKEN_BYTES, above=True)
    assert MAX_TOKEN_BYTES < len(too_big) <= MAX_TOKEN_BYTES + 4
    dep.assert_rejected(f"Bearer {too_big}")
    dep.assert_rejected(f"Bearer {'a' * 20_000}.{'b' * 20_000}.{'c' * 20_000}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("size", [4_000, 9_000, 100_000])
def test_oversized_header_is_rejected(
    deploy: Callable[..., Deployment], alg: str, size: int
) -> None:
    """CWE-400 / CWE-674 (uncontrolled recursion): a huge ``kid`` or a deeply nested header
    is refused without a 500; cf. CVE-2024-33664 for unbounded JWT processing."""
    dep = deploy(alg)
    dep.assert_rejected(f"Bearer {dep.mint({**dep.header, 'kid': 'k' * size})}")
    nested = "[" * size + "]" * size  # deep JSON nesting in the header
    dep.assert_rejected(f"Bearer {b64e(nested.encode())}.{dep.access_token.split('.', 1)[1]}")


# malformed ----------------------------------------------------------------------


def _malformed(dep: Deployment) -> dict[str, str | bytes]:
    token = dep.access_token
    header_b64, payload_b64, signature_b64 = token.split(".")
    rest = f"{payload_b64}.{signature_b64}"
    headers = {
        "header-not-json": b"not json",
        "header-json-array": json.dumps(list(dep.header.items())).encode(),
        "header-json-string": b'"at+jwt"',
        "header-json-null": b"null",
        "header-nan": b'{"alg":NaN}',
        "header-not-utf8": b"\xff\xfe{}",
    }
    cases: dict[str, str | bytes] = {name: f"{b64e(raw)}.{rest}" for name, raw in headers.items()}
    if "-" in token or "_" in token:
        standard = token.replace("-", "+").replace("_", "/")
    else:
        standard = f"{token[:-1]}+"
    cases.update(
        {
            "payload-not-json": f"{header_b64}.{b64e(b'not json')}.{signature_b64}",
            "padding-on-signature": f"{token}{'=' * (-len(signature_b64) % 4)}",
            "padding-on-header": f"{header_b64}==.{rest}",
            "non-canonical-signature": f"{header_b64}.{payload_b64}.{non_canonical(signature_b64)}",
            "standard-alphabet": standard,
            "extra-dot-end": f"{token}.",
            "extra-segment": f"{token}.{signature_b64}",
            "extra-dot-start": f".{token}",
            "double-dot": f"{header_b64}..{rest}",
            "jwe-shape": f"{header_b64}.{payload_b64}.{payload_b64}.{payload_b64}.{signature_b64}",
            "space-inside": f"{header_b64}. {rest}",
            "tab-inside": f"{header_b64}.{payload_b64}\t.{signature_b64}",
            "two-tokens": f"{token} {token}",
            "non-ascii-appended": f"Bearer {token}\u00e9".encode(),
            "non-ascii-inside": f"Bearer {header_b64[:-1]}\u0430.{rest}".encode(),
            "json-instead-of-jws": json.dumps({"header": dep.header, "payload": dep.claims}),
        }
    )
    return cases


MALFORMED_CASES = [
    "header-not-json",
    "header-json-array",
    "header-json-string",
    "header-json-null",
    "header-nan",
    "header-not-utf8",
    "payload-not-json",
    "padding-on-signature",
    "padding-on-header",
    "non-canonical-signature",
    "standard-alphabet",
    "extra-dot-end",
    "extra-segment",
    "extra-dot-start",
    "double-dot",
    "jwe-shape",
    "space-inside",
    "tab-inside",
    "two-tokens",
    "non-ascii-appended",
    "non-ascii-inside",
    "json-instead-of-jws",
]


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_token_is_rejected(
    deploy: Callable[..., Deployment], alg: str, case: str
) -> None:
    """RFC 7515 §2 and §7.1 (compact serialization, base64url without padding); RFC 4648
    §3.5 (canonical encoding); OWASP: strict parsing before any key lookup."""
    dep = deploy(alg)
    value = _malformed(dep)[case]
    if isinstance(value, str):
        value = f"Bearer {value}"
    dep.assert_rejected(value)


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("segment", ["header", "payload"])
def test_non_canonical_base64url_is_rejected_even_when_signed_by_the_real_key(
    deploy: Callable[..., Deployment], alg: str, segment: str
) -> None:
    """RFC 4648 §3.5 and RFC 7515 §2: a segment with non-zero unused bits decodes to the
    same bytes, so a lax decoder lets one token have many spellings (denylist and cache
    evasion). Signed over the exact non-canonical input."""
    dep = deploy(alg)
    header_json = json.dumps(dep.header, separators=(",", ":"))
    payload_json = json.dumps(dep.claims, separators=(",", ":"))
    # pad with JSON whitespace until the segment has unused bits
    if segment == "header":
        while len(header_json) % 3 == 0:
            header_json += " "
        header_b64 = non_canonical(b64e(header_json.encode()))
        payload_b64 = b64e(payload_json.encode())
    else:
        while len(payload_json) % 3 == 0:
            payload_json += " "
        header_b64 = b64e(header_json.encode())
        payload_b64 = non_canonical(b64e(payload_json.encode()))
    canonical = dep.insider_sign(f"{b64e(header_json.encode())}.{b64e(payload_json.encode())}")
    assert dep.me(f"Bearer {canonical}").status_code == 200  # control: the JSON is fine
    dep.assert_rejected(f"Bearer {dep.insider_sign(f'{header_b64}.{payload_b64}')}")


# the Authorization header itself ------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize(
    "scheme", ["Basic", "Token", "JWT", "Bearer:", "Bearer,", "Bearer\t", "none", "Bearer Bearer"]
)
def test_non_bearer_scheme_is_rejected(
    deploy: Callable[..., Deployment], alg: str, scheme: str
) -> None:
    """RFC 6750 §2.1: only the ``Bearer`` scheme carries access tokens; DESIGN §3: any
    other scheme is 401. The genuine token under another scheme must not pass."""
    dep = deploy(alg)
    dep.assert_rejected(f"{scheme} {dep.access_token}")


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
def test_basic_credentials_are_not_accepted(deploy: Callable[..., Deployment], alg: str) -> None:
    """RFC 6750 §2.1 / DESIGN §3: correct e-mail and password under ``Basic`` are still 401."""
    dep = deploy(alg)
    basic = base64.b64encode(f"ada@example.com:{PASSWORD}".encode()).decode("ascii")
    dep.assert_rejected(f"Basic {basic}", absent=("ada@example.com",))


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", "", " "])
def test_empty_bearer_is_rejected(deploy: Callable[..., Deployment], alg: str, value: str) -> None:
    """RFC 6750 §3.1: a request with an empty token is an invalid_token request."""
    dep = deploy(alg)
    dep.assert_rejected(value)


def test_lowercase_bearer_scheme_is_accepted(deploy: Callable[..., Deployment]) -> None:
    """Control for the scheme tests: RFC 9110 §11.1, auth schemes are case-insensitive."""
    dep = deploy("EdDSA")
    assert dep.me(f"bearer {dep.access_token}").status_code == 200
    assert dep.me(f"BEARER {dep.access_token}").status_code == 200


@pytest.mark.parametrize("alg", ALL_ALGORITHMS)
@pytest.mark.parametrize(
    "authorization", ["Bearer ", "Bearer not-a-token", "Basic", "Token x", "", "expired"]
)
def test_bad_authorization_does_not_fall_back_to_a_valid_session_cookie(
    deploy: Callable[..., Deployment], clock: FakeClock, alg: str, authorization: str
) -> None:
    """DESIGN §3 hybrid order; RFC 8725 §2.8: no downgrade to another credential. A valid
    session cookie rides along; the bad Authorization header still decides."""
    dep = deploy(alg)
    login(dep.client)  # the web session cookie is now in the client's jar
    assert dep.client.get("/auth/me").json()["method"] == "session"  # control
    if authorization == "expired":
        expired = dep.access_token
        clock.advance(TTL + LEEWAY + 1)
        dep.access_token = token_login(dep.client)["access_token"]
        authorization = f"Bearer {expired}"
    dep.assert_rejected(authorization)
    assert dep.client.get("/auth/me").json()["method"] == "session"
