"""FastAPI with no authentication: the ceiling of the FastAPI rows."""

from fastapi import FastAPI

USER = {
    "id": "00000000-0000-0000-0000-000000000001",
    "email": "bench@example.com",
    "roles": ["user"],
}

app = FastAPI()


@app.get("/me")
async def me() -> dict:
    return {**USER, "method": "none"}
