-- 0001_init.sql — the initial mailbus schema.
--
-- Applied by mb_db_migrate() inside one transaction (so no CREATE INDEX
-- CONCURRENTLY here). Sized for 10M-row tables: bigint ids everywhere, every
-- foreign key that is used for lookups or cascades has an index whose
-- leading column is that key, and enum-like text columns carry CHECKs so a
-- typo in a stage is an error, not a silent new state.
--
-- Deleting an account cascades to everything derived from it (folders,
-- emails, locations, jobs, chunks, history); dead_letters keep plain ids so
-- the evidence survives the account.

CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    kind        text NOT NULL CHECK (kind IN ('imap', 'gmail')),
    host        text,
    port        int CHECK (port BETWEEN 1 AND 65535),
    tls         text CHECK (tls IN ('imaps', 'starttls', 'plain')),
    username    text,
    auth        text NOT NULL DEFAULT 'password' CHECK (auth IN ('password', 'xoauth2')),
    -- Sealed by util/secret.h: version(1) || nonce(12) || AES-256-GCM
    -- ciphertext || tag(16) of the password or refresh token. The length
    -- check rejects anything shorter than an empty sealed secret; the
    -- plaintext never reaches the database.
    secret      bytea NOT NULL CHECK (octet_length(secret) >= 29),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE folders (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name            text NOT NULL,
    role            text CHECK (role IN ('inbox', 'sent', 'drafts', 'trash', 'junk',
                                         'archive', 'all', 'flagged', 'important')),
    delimiter       text,
    uidvalidity     bigint,
    uidnext         bigint,
    last_uid        bigint NOT NULL DEFAULT 0,
    highest_modseq  numeric(20),
    message_count   bigint NOT NULL DEFAULT 0,
    sync_interval   interval,
    next_sync_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
-- The scheduler asks "which folders are due"; most folders of a huge
-- install are not scheduled, so index only those that are.
CREATE INDEX folders_next_sync_idx ON folders (next_sync_at) WHERE next_sync_at IS NOT NULL;

CREATE TABLE emails (
    id               bigserial PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- SHA-256 of the raw message = the blob's name. Within an account a
    -- message is identified by its bytes, which makes the store idempotent.
    blob_sha256      bytea NOT NULL CHECK (octet_length(blob_sha256) = 32),
    size             bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    message_id       text,
    thread_id        text,
    in_reply_to      text,
    references_      text[],
    subject          text,
    from_name        text,
    from_addr        text,
    date             timestamptz,
    internal_date    timestamptz,
    flags            text[] NOT NULL DEFAULT '{}',
    labels           text[] NOT NULL DEFAULT '{}',
    snippet          text,
    has_attachments  boolean NOT NULL DEFAULT false,
    defects          text[],
    synced_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, blob_sha256)
);
CREATE INDEX emails_account_date_idx ON emails (account_id, date DESC);
CREATE INDEX emails_account_msgid_idx ON emails (account_id, message_id);
CREATE INDEX emails_account_thread_idx ON emails (account_id, thread_id);

-- Where an email lives: one row per (folder, uidvalidity, uid). The same
-- bytes in two folders (Gmail labels, copies) are one email, two locations.
CREATE TABLE email_locations (
    email_id       bigint NOT NULL REFERENCES emails(id) ON DELETE CASCADE,
    folder_id      bigint NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity    bigint NOT NULL,
    uid            bigint NOT NULL CHECK (uid > 0),
    flags          text[] NOT NULL DEFAULT '{}',
    internal_date  timestamptz,
    synced_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (folder_id, uidvalidity, uid)
);
CREATE INDEX email_locations_email_idx ON email_locations (email_id);

CREATE TABLE addresses (
    email_id  bigint NOT NULL REFERENCES emails(id) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('from', 'to', 'cc', 'bcc', 'reply_to')),
    position  smallint NOT NULL CHECK (position >= 0),
    name      text,
    address   text,
    PRIMARY KEY (email_id, kind, position)
);
CREATE INDEX addresses_lower_address_idx ON addresses (lower(address));

CREATE TABLE attachments (
    email_id        bigint NOT NULL REFERENCES emails(id) ON DELETE CASCADE,
    part            text NOT NULL,
    filename        text,
    content_type    text,
    disposition     text,
    content_id      text,
    size            bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    sha256          bytea CHECK (octet_length(sha256) = 32),
    scan_status     text NOT NULL DEFAULT 'pending'
                    CHECK (scan_status IN ('pending', 'clean', 'infected', 'error', 'skipped')),
    scan_signature  text,
    scanned_at      timestamptz,
    PRIMARY KEY (email_id, part)
);
CREATE INDEX attachments_sha256_idx ON attachments (sha256);

-- One verdict per distinct attachment content: avscan scans each SHA-256
-- once and copies the verdict to every attachments row with that hash.
CREATE TABLE av_verdicts (
    sha256      bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    status      text NOT NULL CHECK (status IN ('clean', 'infected', 'error', 'skipped')),
    signature   text,
    scanned_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sync_jobs (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    type            text NOT NULL CHECK (type IN ('import', 'sync')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'scanning', 'running', 'paused',
                                      'completed', 'failed', 'cancelled')),
    options         jsonb NOT NULL DEFAULT '{}',
    total_messages  bigint NOT NULL DEFAULT 0,
    total_bytes     bigint NOT NULL DEFAULT 0,
    scanned         bigint NOT NULL DEFAULT 0,
    fetched         bigint NOT NULL DEFAULT 0,
    parsed          bigint NOT NULL DEFAULT 0,
    stored          bigint NOT NULL DEFAULT 0,
    bytes_fetched   bigint NOT NULL DEFAULT 0,
    av_scanned      bigint NOT NULL DEFAULT 0,
    av_pending      bigint NOT NULL DEFAULT 0,
    av_infected     bigint NOT NULL DEFAULT 0,
    errors          bigint NOT NULL DEFAULT 0,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_jobs_status_idx ON sync_jobs (status);
CREATE INDEX sync_jobs_account_created_idx ON sync_jobs (account_id, created_at DESC);

-- The checkpoints: each chunk of work the scan cut, and how far it got.
CREATE TABLE job_chunks (
    id             bigserial PRIMARY KEY,
    job_id         bigint NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    folder_id      bigint NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    seq            int NOT NULL,
    uid_first      bigint NOT NULL,
    uid_last       bigint NOT NULL CHECK (uid_last >= uid_first),
    message_count  int NOT NULL DEFAULT 0,
    bytes          bigint NOT NULL DEFAULT 0,
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'published', 'done', 'failed')),
    stored_count   int NOT NULL DEFAULT 0,
    published_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, seq)
);
CREATE INDEX job_chunks_job_state_idx ON job_chunks (job_id, state);
CREATE INDEX job_chunks_folder_idx ON job_chunks (folder_id);

-- Per-message progress so counters stay exact under redelivery: the store
-- flips stored false -> true once (UPDATE ... WHERE NOT stored RETURNING),
-- and only a flip advances sync_jobs.stored / job_chunks.stored_count.
-- Lean on purpose (this is the widest table during an import): no FKs to
-- folders/chunks (the job cascade removes the rows), and "stored" is not
-- indexed so its update stays a HOT update; fillfactor leaves room for it.
CREATE TABLE job_messages (
    job_id     bigint NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    folder_id  bigint NOT NULL,
    uid        bigint NOT NULL,
    chunk_id   bigint NOT NULL,
    stored     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, folder_id, uid)
) WITH (fillfactor = 85);
CREATE INDEX job_messages_chunk_idx ON job_messages (chunk_id);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    stage       text NOT NULL,
    subject     text,
    reason      text,
    job_id      bigint,
    account_id  bigint,
    deliveries  int NOT NULL DEFAULT 0,
    stream_seq  bigint,
    headers     jsonb,
    payload     bytea,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_created_idx ON dead_letters (created_at);
CREATE INDEX dead_letters_job_idx ON dead_letters (job_id);

CREATE TABLE sync_history (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    folder_id   bigint REFERENCES folders(id) ON DELETE SET NULL,
    job_id      bigint REFERENCES sync_jobs(id) ON DELETE SET NULL,
    event       text NOT NULL,
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_history_account_created_idx ON sync_history (account_id, created_at DESC);
-- ON DELETE SET NULL on folder_id/job_id scans by those keys; index them.
CREATE INDEX sync_history_folder_idx ON sync_history (folder_id) WHERE folder_id IS NOT NULL;
CREATE INDEX sync_history_job_idx ON sync_history (job_id) WHERE job_id IS NOT NULL;
