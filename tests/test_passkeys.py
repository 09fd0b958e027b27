"""Passkeys (gatepass.passkeys): real WebAuthn ceremonies with a software
authenticator (tests/webauthn_authenticator.py), and every way an attacker may
try to get an assertion or a registration accepted."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatepass.config import Settings
from gatepass.core import Gatepass
from gatepass.errors import AuthenticationFailed, InvalidRequest, NotFound
from gatepass.passkeys import CHALLENGE_TTL, PasskeyAssertion
from gatepass.passwords import PasswordHasher
from gatepass.stores.base import UserRecord
from tests.conftest import ORIGIN, PASSWORD, FakeClock
from tests.webauthn_authenticator import SoftAuthenticator, b64url, unb64url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def gp(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> AsyncIterator[Gatepass]:
    instance = await Gatepass.open(make_settings(), clock=clock, hasher=fast_hasher)
    yield instance
    await instance.close()


async def new_user(gp: Gatepass, email: str = "ada@example.com") -> UserRecord:
    return await gp.accounts.register(email, PASSWORD)  # type: ignore[return-value]


async def enrolled(
    gp: Gatepass, user: UserRecord, name: str | None = "Laptop", **authenticator: Any
) -> SoftAuthenticator:
    """A software authenticator holding a passkey registered for ``user``."""
    device = SoftAuthenticator(origin=ORIGIN, **authenticator)
    options = await gp.passkeys.registration_options(user)
    await gp.passkeys.register(user, device.create(options), name)
    return device


async def login_options(gp: Gatepass) -> str:
    return await gp.passkeys.authentication_options(user_id=None, ceremony="login")


async def mfa_options(gp: Gatepass, user: UserRecord) -> str:
    return await gp.passkeys.authentication_options(user_id=user.id, ceremony="mfa")


async def passwordless(gp: Gatepass, credential: dict[str, Any]) -> PasskeyAssertion:
    return await gp.passkeys.authenticate(credential, ceremony="login", user_id=None)


def factor_events(gp: Gatepass, event: str) -> float:
    value = gp.metrics.registry.get_sample_value(
        "gatepass_factor_events_total", {"factor": "webauthn", "event": event}
    )
    return value or 0.0


# the ceremonies ------------------------------------------------------------------


async def test_a_registered_passkey_signs_in_passwordless_and_as_second_factor(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    [view] = await gp.passkeys.list(user.id)
    assert view.name == "Laptop"
    assert view.last_used_at is None

    assertion = await passwordless(gp, device.get(await login_options(gp)))
    assert assertion == PasskeyAssertion(user.id, view.id, user_verified=True)

    second = await gp.passkeys.authenticate(
        device.get(await mfa_options(gp, user)), ceremony="mfa", user_id=user.id
    )
    assert second.user_id == user.id
    [used] = await gp.passkeys.list(user.id)
    assert used.last_used_at is not None
    assert factor_events(gp, "added") == 1
    assert factor_events(gp, "used") == 2


async def test_creation_options_ask_for_a_discoverable_credential_and_hide_the_user_id(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    first = await enrolled(gp, user)
    options = json.loads(await gp.passkeys.registration_options(user))
    assert options["rp"]["id"] == "testserver"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["attestation"] == "none"
    handle = unb64url(options["user"]["id"])
    # A random handle, the same on every options call: never the user ID or address.
    assert handle == first.user_handle
    assert user.id.encode() not in handle
    assert user.email.encode() not in handle
    assert [c["id"] for c in options["excludeCredentials"]] == [b64url(first.credential_id)]


async def test_request_options_name_the_users_passkeys_only_when_bound_to_the_user(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    login = json.loads(await login_options(gp))
    assert login["allowCredentials"] == []
    assert login["userVerification"] == "required"
    mfa = json.loads(await mfa_options(gp, user))
    assert [c["id"] for c in mfa["allowCredentials"]] == [b64url(device.credential_id)]


async def test_a_passkey_without_user_verification_is_reported_as_such(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    assertion = await gp.passkeys.authenticate(
        device.get(await mfa_options(gp, user), user_verified=False),
        ceremony="mfa",
        user_id=user.id,
    )
    assert assertion.user_verified is False


async def test_a_counterless_authenticator_keeps_working(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user, counter_step=0)
    for _ in range(3):
        await passwordless(gp, device.get(await login_options(gp)))


async def test_loopback_origins_work_with_the_localhost_rp_id(
    make_settings: Callable[..., Settings], clock: FakeClock, fast_hasher: PasswordHasher
) -> None:
    settings = make_settings(public_url="http://127.0.0.1:8123")
    gp = await Gatepass.open(settings, clock=clock, hasher=fast_hasher)
    try:
        user = await new_user(gp)
        device = SoftAuthenticator(origin="http://localhost:8123")
        options = await gp.passkeys.registration_options(user)
        assert json.loads(options)["rp"]["id"] == "localhost"
        await gp.passkeys.register(user, device.create(options), "Key")
        await passwordless(gp, device.get(await login_options(gp), origin="http://[::1]:8123"))
        with pytest.raises(AuthenticationFailed):
            await passwordless(
                gp, device.get(await login_options(gp), origin="http://localhost:80")
            )
    finally:
        await gp.close()


# names and management --------------------------------------------------------------


async def test_a_passkey_without_a_name_is_named_for_its_date(
    gp: Gatepass, clock: FakeClock
) -> None:
    user = await new_user(gp)
    await enrolled(gp, user, name=None)
    [view] = await gp.passkeys.list(user.id)
    assert view.name == "Passkey 2027-01-15"  # FakeClock starts at 1.8e9


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "nul\x00"])
async def test_an_invalid_name_is_refused(gp: Gatepass, name: str) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    [view] = await gp.passkeys.list(user.id)
    with pytest.raises(InvalidRequest) as caught:
        await gp.passkeys.rename(user.id, view.id, name)
    assert caught.value.status == 422
    del device


async def test_another_users_passkey_cannot_be_renamed_or_deleted(gp: Gatepass) -> None:
    ada, eve = await new_user(gp), await new_user(gp, "eve@example.com")
    await enrolled(gp, ada)
    [view] = await gp.passkeys.list(ada.id)
    with pytest.raises(NotFound):
        await gp.passkeys.rename(eve.id, view.id, "mine now")
    with pytest.raises(NotFound):
        await gp.passkeys.delete(eve.id, view.id)
    assert await gp.passkeys.count(ada.id) == 1


async def test_a_deleted_passkey_no_longer_signs_in(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    [view] = await gp.passkeys.list(user.id)
    await gp.passkeys.delete(user.id, view.id)
    assert await gp.passkeys.count(user.id) == 0
    assert factor_events(gp, "removed") == 1
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp)))


# attacks on authentication -----------------------------------------------------------


async def test_an_assertion_for_another_challenge_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    await login_options(gp)  # issued, but not the one signed
    forged = b64url(b"\x01" * 32)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), challenge=forged))


async def test_a_reused_challenge_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    options = await login_options(gp)
    await passwordless(gp, device.get(options))
    with pytest.raises(AuthenticationFailed):
        # Signed afresh, with a higher counter: only the challenge is stale.
        await passwordless(gp, device.get(options))


async def test_an_expired_challenge_is_refused(gp: Gatepass, clock: FakeClock) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    options = await login_options(gp)
    clock.advance(CHALLENGE_TTL)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(options))


async def test_a_failed_assertion_still_uses_up_its_challenge(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    options = await login_options(gp)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(options, origin="https://evil.example"))
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(options))


async def test_an_assertion_made_for_another_origin_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), origin="https://evil.example"))


async def test_an_assertion_made_for_another_rp_id_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), rp_id="evil.example"))


async def test_an_assertion_from_a_cross_origin_frame_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    framed = device.get(
        await login_options(gp),
        client_data_extra={"crossOrigin": True, "topOrigin": "https://evil.example"},
    )
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, framed)


async def test_an_assertion_without_user_presence_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), user_present=False))


async def test_an_assertion_signed_by_another_key_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    # Same credential ID and user handle, another private key.
    impostor = SoftAuthenticator(
        origin=ORIGIN,
        credential_id=device.credential_id,
        user_handle=device.user_handle,
        counter=100,
    )
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, impostor.get(await login_options(gp)))


@pytest.mark.parametrize("stale", ["lower", "equal"])
async def test_a_signature_counter_that_did_not_grow_is_refused(
    gp: Gatepass, stale: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user, counter=5)
    await passwordless(gp, device.get(await login_options(gp)))  # counter 6
    clone = 5 if stale == "lower" else 6
    with (
        caplog.at_level(logging.WARNING, logger="gatepass.audit"),
        pytest.raises(AuthenticationFailed),
    ):
        await passwordless(gp, device.get(await login_options(gp), counter=clone))
    assert "possibly a cloned authenticator" in caplog.text
    # The genuine authenticator goes on from its own counter.
    await passwordless(gp, device.get(await login_options(gp)))


async def test_a_zero_counter_after_a_non_zero_one_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user, counter=3)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), counter=0))


async def test_another_users_credential_under_a_bound_challenge_is_refused(
    gp: Gatepass,
) -> None:
    ada, eve = await new_user(gp), await new_user(gp, "eve@example.com")
    await enrolled(gp, ada)
    eves_device = await enrolled(gp, eve)
    options = await mfa_options(gp, ada)  # Ada's second-factor step
    with pytest.raises(AuthenticationFailed):
        await gp.passkeys.authenticate(eves_device.get(options), ceremony="mfa", user_id=ada.id)


async def test_a_challenge_bound_to_one_user_is_refused_for_another(gp: Gatepass) -> None:
    ada, eve = await new_user(gp), await new_user(gp, "eve@example.com")
    await enrolled(gp, ada)
    eves_device = await enrolled(gp, eve)
    adas_options = await mfa_options(gp, ada)
    with pytest.raises(AuthenticationFailed):
        await gp.passkeys.authenticate(
            eves_device.get(adas_options), ceremony="mfa", user_id=eve.id
        )


async def test_a_registration_challenge_used_for_authentication_is_refused(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    creation = json.loads(await gp.passkeys.registration_options(user))
    with pytest.raises(AuthenticationFailed):
        await gp.passkeys.authenticate(
            device.get(await mfa_options(gp, user), challenge=creation["challenge"]),
            ceremony="mfa",
            user_id=user.id,
        )


async def test_a_challenge_of_another_ceremony_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    reauth = await gp.passkeys.authentication_options(user_id=user.id, ceremony="reauth")
    with pytest.raises(AuthenticationFailed):
        await gp.passkeys.authenticate(device.get(reauth), ceremony="mfa", user_id=user.id)


async def test_a_passwordless_assertion_with_a_foreign_or_no_user_handle_is_refused(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), user_handle=b"\x02" * 32))
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, device.get(await login_options(gp), send_user_handle=False))


async def test_an_unknown_credential_is_refused(gp: Gatepass) -> None:
    await new_user(gp)
    stranger = SoftAuthenticator(origin=ORIGIN, user_handle=b"\x03" * 32)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, stranger.get(await login_options(gp), rp_id="testserver"))


async def test_every_refusal_reads_the_same(gp: Gatepass) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    texts = set()
    for credential in (
        device.get(await login_options(gp), origin="https://evil.example"),
        device.get(await login_options(gp), rp_id="evil.example"),
        device.get(await login_options(gp), challenge=b64url(b"x" * 32)),
        {"id": "nothing"},
    ):
        with pytest.raises(AuthenticationFailed) as caught:
            await passwordless(gp, credential)
        texts.add(caught.value.detail)
    assert len(texts) == 1
    assert factor_events(gp, "failed") == 4


# attacks on registration -------------------------------------------------------------


async def test_a_registration_for_another_origin_or_rp_id_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    for changes in ({"origin": "https://evil.example"}, {"rp_id": "evil.example"}):
        device = SoftAuthenticator(origin=ORIGIN)
        options = await gp.passkeys.registration_options(user)
        with pytest.raises(InvalidRequest) as caught:
            await gp.passkeys.register(user, device.create(options, **changes), "Key")
        assert caught.value.status == 400
    assert await gp.passkeys.count(user.id) == 0


async def test_a_registration_challenge_of_another_user_is_refused(gp: Gatepass) -> None:
    ada, eve = await new_user(gp), await new_user(gp, "eve@example.com")
    adas_options = await gp.passkeys.registration_options(ada)
    device = SoftAuthenticator(origin=ORIGIN)
    with pytest.raises(InvalidRequest):
        await gp.passkeys.register(eve, device.create(adas_options), "Key")
    assert await gp.passkeys.count(eve.id) == 0


async def test_an_authentication_challenge_used_for_registration_is_refused(
    gp: Gatepass,
) -> None:
    user = await new_user(gp)
    device = SoftAuthenticator(origin=ORIGIN)
    creation = await gp.passkeys.registration_options(user)
    request = json.loads(await mfa_options(gp, user))
    with pytest.raises(InvalidRequest):
        await gp.passkeys.register(
            user, device.create(creation, challenge=request["challenge"]), "Key"
        )


async def test_a_reused_registration_challenge_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    options = await gp.passkeys.registration_options(user)
    await gp.passkeys.register(user, SoftAuthenticator(origin=ORIGIN).create(options), "One")
    with pytest.raises(InvalidRequest):
        await gp.passkeys.register(user, SoftAuthenticator(origin=ORIGIN).create(options), "Two")
    assert await gp.passkeys.count(user.id) == 1


async def test_a_credential_registered_to_another_user_cannot_be_registered_again(
    gp: Gatepass,
) -> None:
    ada, eve = await new_user(gp), await new_user(gp, "eve@example.com")
    device = await enrolled(gp, ada)
    copy = SoftAuthenticator(origin=ORIGIN, credential_id=device.credential_id)
    with pytest.raises(InvalidRequest):
        await gp.passkeys.register(eve, copy.create(await gp.passkeys.registration_options(eve)))
    assert await gp.passkeys.count(eve.id) == 0


# malformed input ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
B64 = st.binary(max_size=80).map(b64url)


def _shapes() -> st.SearchStrategy[Any]:
    """Credentials of every shape: any JSON, and near-misses of the real one (each
    member any JSON or any base64url bytes)."""
    member = JSON | B64
    near = st.fixed_dictionaries(
        {
            "id": member,
            "rawId": member,
            "type": st.sampled_from(["public-key", "other"]) | JSON,
            "response": st.fixed_dictionaries(
                {
                    "clientDataJSON": member,
                    "authenticatorData": member,
                    "attestationObject": member,
                    "signature": member,
                    "userHandle": member,
                    "transports": JSON,
                }
            ),
        }
    )
    return JSON | near


@settings(
    max_examples=100,
    deadline=None,
    # One store for all examples (a user is made once); each example awaits it.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(credential=_shapes())
async def test_no_credential_shape_is_anything_but_a_refusal(gp: Gatepass, credential: Any) -> None:
    user = await gp.store.get_user_by_email("ada@example.com") or await new_user(gp)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, credential)
    with pytest.raises(InvalidRequest) as caught:
        await gp.passkeys.register(user, credential, "Key")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "client_data",
    [
        b"not json",
        b"[]",
        b'{"type": "webauthn.get", "challenge": 5, "origin": "https://testserver"}',
        b'{"type": "webauthn.get", "challenge": "a!b", "origin": "https://testserver"}',
        b'{"type": "webauthn.get", "challenge": "", "origin": "https://testserver"}',
        b'{"type": "webauthn.get", "challenge": "AAAA", "origin": null}',
        b"\xff\xfe",
    ],
)
async def test_a_malformed_client_data_json_is_refused(gp: Gatepass, client_data: bytes) -> None:
    user = await new_user(gp)
    device = await enrolled(gp, user)
    credential = device.get(await login_options(gp))
    credential["response"]["clientDataJSON"] = b64url(client_data)
    with pytest.raises(AuthenticationFailed):
        await passwordless(gp, credential)


async def test_a_garbled_attestation_object_is_refused(gp: Gatepass) -> None:
    user = await new_user(gp)
    credential = SoftAuthenticator(origin=ORIGIN).create(
        await gp.passkeys.registration_options(user)
    )
    credential["response"]["attestationObject"] = b64url(b"\xa1\x63fmt\x64none")
    with pytest.raises(InvalidRequest) as caught:
        await gp.passkeys.register(user, credential, "Key")
    assert caught.value.status == 400
