-- Coherence between nodes. Every registry change takes the next version
-- from the one row of registry_version, last in its transaction: the row
-- lock hands versions out in commit order with no gaps, so a node that has
-- applied every change up to version v needs only the changes after v
-- (registry_changes) to be current. Notifications on the channel
-- `wasm_exec_registry` carry the new version; they are a hint to look, the
-- versions decide.
CREATE TABLE registry_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO registry_version (singleton, version) VALUES (true, 0);

CREATE TABLE registry_changes (
    version bigint PRIMARY KEY,
    name text NOT NULL
);

-- Nodes and the address each advertises, so that a node can name the
-- owner of an instance it does not hold.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    url text NOT NULL,
    seen timestamptz NOT NULL DEFAULT now()
);
