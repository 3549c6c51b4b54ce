-- 0009_verify.sql — `mailbus verify` (stages/verify/verify.h): each finished
-- verification of an account, with what it found per kind of difference.
-- job_id: the account's latest completed job when it ran, the one it
-- vouches for (`mailbus jobs` shows it); a plain id, the job may be purged.
CREATE TABLE verify_runs (
    id               bigserial PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    job_id           bigint,
    started_at       timestamptz NOT NULL,
    duration_ms      bigint NOT NULL,
    deep             boolean NOT NULL,
    server_messages  bigint NOT NULL,
    stored_messages  bigint NOT NULL,
    differences      bigint NOT NULL,
    missing          bigint NOT NULL,
    counts           jsonb NOT NULL
);
CREATE INDEX verify_runs_job_idx ON verify_runs (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX verify_runs_account_idx ON verify_runs (account_id, id DESC);

-- `mailbus verify --repair`: messages to fetch again, by folder, UIDVALIDITY
-- and UID (not stored although the server has them; blob missing or
-- corrupt). The next sync of the account reads each such folder whole, keeps
-- these in its new messages even where a location exists (so the blob is
-- written again), and deletes the folder's rows in the transaction that
-- records the folder (a sync lost half-way finds them again).
CREATE TABLE repair_items (
    folder_id    bigint NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity  bigint NOT NULL,
    uid          bigint NOT NULL,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (folder_id, uidvalidity, uid)
);
