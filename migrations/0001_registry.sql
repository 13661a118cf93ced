-- The module registry: records, their host-module links, binaries by
-- SHA-256, and compiled artifacts by (SHA-256, engine compatibility hash).
-- The integrity rules of the ModuleStore contract are the database's own:
-- a unique name, host modules that exist (and cannot be deleted while
-- linked), a record's binary present while the record is.

CREATE TABLE binaries (
    sha256 text PRIMARY KEY,
    wasm bytea NOT NULL
);

CREATE TABLE modules (
    name text PRIMARY KEY,
    sha256 text NOT NULL REFERENCES binaries (sha256),
    size bigint NOT NULL,
    created text NOT NULL,
    owner text
);

CREATE TABLE module_hosts (
    name text NOT NULL REFERENCES modules (name) ON DELETE CASCADE,
    position integer NOT NULL,
    host text NOT NULL REFERENCES modules (name) ON DELETE RESTRICT,
    PRIMARY KEY (name, position)
);

CREATE INDEX module_hosts_by_host ON module_hosts (host);
CREATE INDEX modules_by_owner ON modules (owner);
CREATE INDEX modules_by_sha256 ON modules (sha256);

CREATE TABLE artifacts (
    sha256 text NOT NULL REFERENCES binaries (sha256) ON DELETE CASCADE,
    engine text NOT NULL,
    artifact bytea NOT NULL,
    PRIMARY KEY (sha256, engine)
);
