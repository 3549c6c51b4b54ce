-- 0004_leases.sql — leases that survive reconnects, and chunk progress for the sweep.
--
-- Who scans a job and who coordinates it was a session advisory lock keyed by
-- an int cast of the job id: a silent reconnect lost it, so after a Postgres
-- blip two scan processes could coordinate one job. A lease is a row: taken
-- or renewed by one upsert that succeeds only when the row is free, expired
-- or already the caller's (stages/common/lease.h). Expiry is by the server's
-- clock, so hosts need not agree on the time.
CREATE TABLE leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX leases_holder_idx ON leases (holder);

-- The coordinator's sweep: a published chunk whose messages make no progress
-- for MAILBUS_CHUNK_STALL_MS is handed out again (its fetch task was lost:
-- a JetStream store gone, a record dropped). progress is the sum of its
-- messages' stage bits when last looked at, progress_at when that changed;
-- republished counts the sweeps, and gives the new fetch task an id of its own.
ALTER TABLE job_chunks
    ADD COLUMN progress bigint,
    ADD COLUMN progress_at timestamptz,
    ADD COLUMN republished int NOT NULL DEFAULT 0;
