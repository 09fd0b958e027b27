from starlette.testclient import TestClient

from tests.conftest import ORIGIN, FakeClock, login, register, session_cookie


def test_register_login_me_logout_round_trip(client: TestClient, clock: FakeClock) -> None:
    user = register(client)
    csrf = login(client, "  ADA@Example.com ")
    assert session_cookie(client)
    me = client.get("/auth/me")
    assert me.status_code == 200
    assert me.json() == {
        "id": user["id"],
        "email": "ada@example.com",
        "roles": ["user"],
        "email_verified": False,
        "method": "session",
        "auth_time": int(clock()),
        "amr": ["pwd"],
    }
    out = client.post("/auth/logout", headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
    assert out.status_code == 204
    assert client.get("/auth/me").status_code == 401
