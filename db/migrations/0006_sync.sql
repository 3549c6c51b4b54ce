-- 0006_sync.sql — keeping an imported account in sync (stages/scan/sync.c).
--
-- A sync job reads what changed in each folder since the state the last
-- import or sync left in `folders` (uidvalidity, uidnext, highest_modseq,
-- message_count). That state moves only when the job completes: what a sync
-- found is kept per job and folder in job_folders and applied to `folders`
-- with the completion, so a sync that fails or is cancelled leaves the
-- folders where they were and the next one reads the same changes again
-- (every change a sync applies is idempotent).

-- A folder the server no longer has keeps its row (history points at it),
-- retired: deleted_at set, no locations left.
ALTER TABLE folders ADD COLUMN deleted_at timestamptz;

-- An email with no location left is kept, deleted, for a retention period;
-- the cleanup job purges it then (if it still has no location). A location
-- stored again (the message came back, moved) clears it.
ALTER TABLE emails ADD COLUMN deleted_at timestamptz;
CREATE INDEX emails_deleted_idx ON emails (deleted_at) WHERE deleted_at IS NOT NULL;

-- What a sync found in one folder, and the state to remember once the job
-- completes. event: the folder was created, renamed (old_name), deleted on
-- the server, or its UIDVALIDITY was reset. method: how the changes were
-- read (qresync, condstore, full, unchanged, reset, scan for a new folder).
CREATE TABLE job_folders (
    job_id          bigint NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    folder_id       bigint NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uidvalidity     bigint,
    uidnext         bigint,
    highest_modseq  numeric(20),
    message_count   bigint,
    method          text,
    event           text CHECK (event IN ('created', 'renamed', 'deleted', 'reset')),
    old_name        text,
    added           bigint NOT NULL DEFAULT 0,
    flags_changed   bigint NOT NULL DEFAULT 0,
    duration_ms     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, folder_id)
);
CREATE INDEX job_folders_folder_idx ON job_folders (folder_id);

-- The UID-set comparison of a server without QRESYNC: every UID (and its
-- flags) the server still holds below the folder's last UIDNEXT, written in
-- batches as the listing streams in, then compared with the locations in SQL
-- (memory stays flat on a 1M-message folder). Emptied when the folder is done.
CREATE TABLE job_listing (
    job_id     bigint NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    folder_id  bigint NOT NULL,
    uid        bigint NOT NULL,
    flags      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, folder_id, uid)
);

-- Every location a sync removed (a scan run again after a crash finds it
-- gone already, so the count comes from here, not from a counter). On
-- completion, those whose email got a location in another folder in the same
-- job count as moved, the others as deleted.
CREATE TABLE job_gone (
    job_id     bigint NOT NULL REFERENCES sync_jobs(id) ON DELETE CASCADE,
    folder_id  bigint NOT NULL,
    uid        bigint NOT NULL,
    email_id   bigint NOT NULL,
    PRIMARY KEY (job_id, folder_id, uid)
);

-- One active job per account: an import and a sync (or two syncs) of the
-- same account would race on its folders' state. A second one is refused.
-- A database from before this rule may hold several: all but the oldest
-- active job of an account are cancelled, saying why.
UPDATE sync_jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
       error = 'cancelled by migration 0006: one active job per account'
WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY account_id ORDER BY id) AS n
                             FROM sync_jobs
                             WHERE status IN ('pending', 'scanning', 'running', 'paused')) a
             WHERE a.n > 1);
CREATE UNIQUE INDEX sync_jobs_one_active_idx ON sync_jobs (account_id)
    WHERE status IN ('pending', 'scanning', 'running', 'paused');

-- However a job ends (completed by the coordinator, failed by a stage,
-- cancelled by a command), in the same transaction: a completed job's folder
-- states become the folders' (the next sync starts from them), and one
-- sync_history row (event = the job's type) sums it up per folder — method,
-- event, added, flags changed, deleted, moved (a location gone from one
-- folder whose email got a location in another folder in this job), time —
-- with the messages stored and given up on, counted from job_messages.
CREATE FUNCTION mb_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' THEN
        UPDATE folders f SET uidvalidity = jf.uidvalidity, uidnext = jf.uidnext,
               highest_modseq = jf.highest_modseq, message_count = jf.message_count,
               updated_at = now()
        FROM job_folders jf
        WHERE jf.job_id = NEW.id AND f.id = jf.folder_id AND jf.uidvalidity IS NOT NULL
          AND jf.event IS DISTINCT FROM 'deleted';
    END IF;
    INSERT INTO sync_history (account_id, job_id, event, detail)
    SELECT NEW.account_id, NEW.id, NEW.type, jsonb_build_object(
        'status', NEW.status,
        'error', NEW.error,
        'started_at', NEW.created_at,
        'duration_ms', (extract(epoch FROM (now() - NEW.created_at)) * 1000)::bigint,
        'stored', (SELECT count(*) FROM job_messages WHERE job_id = NEW.id AND st & 4 <> 0),
        'errors', (SELECT count(*) FROM job_messages WHERE job_id = NEW.id AND st & 8 <> 0),
        'folders', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'folder', f.name, 'method', jf.method, 'event', jf.event,
                'old_name', jf.old_name, 'added', jf.added, 'flags_changed', jf.flags_changed,
                'deleted', m.gone - m.moved, 'moved', m.moved,
                'duration_ms', jf.duration_ms) ORDER BY f.name)
            FROM job_folders jf JOIN folders f ON f.id = jf.folder_id
            CROSS JOIN LATERAL (
                SELECT count(*) AS gone, count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM email_locations l JOIN job_messages jm
                      ON jm.job_id = NEW.id AND jm.folder_id = l.folder_id AND jm.uid = l.uid
                    WHERE l.email_id = g.email_id AND l.folder_id <> g.folder_id)) AS moved
                FROM job_gone g WHERE g.job_id = NEW.id AND g.folder_id = jf.folder_id) m
            WHERE jf.job_id = NEW.id), '[]'::jsonb));
    DELETE FROM job_listing WHERE job_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER sync_jobs_finished AFTER UPDATE OF status ON sync_jobs
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION mb_job_finished();
