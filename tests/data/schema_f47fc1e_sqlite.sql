-- The schema that SqlStore.start made with metadata.create_all at commit f47fc1e,
-- before migrations existed (SQLite). Tests build "old" databases from it.

CREATE TABLE gatepass_revocations (
	id INTEGER NOT NULL,
	kind VARCHAR(16) NOT NULL,
	subject VARCHAR(128) NOT NULL,
	value FLOAT NOT NULL,
	created_at FLOAT NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_gatepass_revocations_created ON gatepass_revocations (created_at);

CREATE TABLE gatepass_secrets (
	name VARCHAR(64) NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE gatepass_signing_keys (
	kid VARCHAR(64) NOT NULL,
	alg VARCHAR(16) NOT NULL,
	state VARCHAR(16) NOT NULL,
	private_material TEXT NOT NULL,
	created_at FLOAT NOT NULL,
	retired_at FLOAT,
	PRIMARY KEY (kid)
);

CREATE TABLE gatepass_users (
	id VARCHAR(36) NOT NULL,
	email VARCHAR(320) NOT NULL,
	password_hash TEXT NOT NULL,
	roles TEXT NOT NULL,
	created_at FLOAT NOT NULL,
	tokens_valid_after FLOAT NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (email)
);

CREATE TABLE gatepass_refresh_families (
	id VARCHAR(64) NOT NULL,
	user_id VARCHAR(36) NOT NULL,
	created_at FLOAT NOT NULL,
	last_used_at FLOAT NOT NULL,
	expires_at FLOAT NOT NULL,
	ip VARCHAR(64),
	user_agent VARCHAR(512),
	revoked BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(user_id) REFERENCES gatepass_users (id) ON DELETE CASCADE
);
CREATE INDEX ix_gatepass_families_user ON gatepass_refresh_families (user_id);

CREATE TABLE gatepass_sessions (
	id_hash VARCHAR(64) NOT NULL,
	handle VARCHAR(64) NOT NULL,
	user_id VARCHAR(36) NOT NULL,
	csrf_token VARCHAR(64) NOT NULL,
	created_at FLOAT NOT NULL,
	last_seen_at FLOAT NOT NULL,
	ip VARCHAR(64),
	user_agent VARCHAR(512),
	PRIMARY KEY (id_hash),
	UNIQUE (handle),
	FOREIGN KEY(user_id) REFERENCES gatepass_users (id) ON DELETE CASCADE
);
CREATE INDEX ix_gatepass_sessions_user ON gatepass_sessions (user_id);

CREATE TABLE gatepass_refresh_tokens (
	token_hash VARCHAR(64) NOT NULL,
	family_id VARCHAR(64) NOT NULL,
	created_at FLOAT NOT NULL,
	used_at FLOAT,
	PRIMARY KEY (token_hash),
	FOREIGN KEY(family_id) REFERENCES gatepass_refresh_families (id) ON DELETE CASCADE
);
CREATE INDEX ix_gatepass_refresh_tokens_family ON gatepass_refresh_tokens (family_id);
