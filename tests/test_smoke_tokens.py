from starlette.testclient import TestClient

from tests.conftest import PASSWORD, register


def test_mobile_login_refresh_me_logout(client: TestClient) -> None:
    register(client)
    r = client.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD, "client": "mobile"}
    )
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "Bearer"
    assert r.headers["cache-control"] == "no-store"
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["method"] == "bearer"
    r2 = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r2.status_code == 200, r2.text
    new = r2.json()
    # reuse kills the family
    r3 = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r3.status_code == 401
    assert client.post("/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
    auth = {"Authorization": f"Bearer {new['access_token']}"}
    assert client.get("/auth/me", headers=auth).status_code == 401
    jwks = client.get("/.well-known/jwks.json").json()
    assert jwks["keys"] and jwks["keys"][0]["alg"] == "EdDSA"
