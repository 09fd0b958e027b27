"""Flask with no authentication: the ceiling of the Flask rows."""

from flask import Flask, jsonify

USER = {
    "id": "00000000-0000-0000-0000-000000000001",
    "email": "bench@example.com",
    "roles": ["user"],
}

app = Flask(__name__)


@app.get("/me")
def me():
    return jsonify(**USER, method="none")
