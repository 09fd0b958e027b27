"""The SQLAlchemy ``MetaData`` every gatepass table is defined on, in a module of its
own so the table modules (users, sessions, tokens, factors, passkeys) can each
define theirs without importing one another."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
