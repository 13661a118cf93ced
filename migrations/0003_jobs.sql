-- Asynchronous jobs (POST /jobs): one row per job, its record the API's
-- JSON (status, request, result), replaced as the job moves on. Jobs live
-- beside the modules so that a restart, or another node sharing the store,
-- finds them.
CREATE TABLE jobs (
    id text PRIMARY KEY,
    record bytea NOT NULL
);
