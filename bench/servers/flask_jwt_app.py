"""Flask-JWT-Extended: POST /login hands out a token, GET /me requires it."""

import os

from flask import Flask, jsonify
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)

app = Flask(__name__)
app.config["JWT_SECRET_KEY"] = os.urandom(32).hex()
jwt = JWTManager(app)


@jwt.invalid_token_loader
def invalid_token(reason):
    # Flask-JWT-Extended answers 422 by default; the bench wants the usual 401.
    return jsonify(msg="invalid token"), 401


@app.post("/login")
def login():
    return jsonify(
        access_token=create_access_token(identity="u1", additional_claims={"roles": ["user"]})
    )


@app.get("/me")
@jwt_required()
def me():
    return jsonify(id=get_jwt_identity(), roles=get_jwt()["roles"], method="bearer")
