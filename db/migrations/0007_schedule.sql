-- 0007_schedule.sql — when each folder is synced next (stages/scan/scheduler.c).
--
-- A folder is scheduled once a job that read it has completed (an import or
-- a sync): from then on the scheduler starts a sync of it every interval
-- after the last one. The interval is, first match wins:
--   folders.sync_every   set by `mailbus schedule set ACCOUNT --folder F`
--   accounts.sync_every  set by `mailbus schedule set ACCOUNT`
--   folders.sync_interval the automatic one: the folder's base interval by
--                         role (mb_sync_base), adapted to activity below
-- An interval of 0 means off (never scheduled; `mailbus sync` still works).

ALTER TABLE accounts ADD COLUMN sync_every interval CHECK (sync_every >= interval '0');
ALTER TABLE folders ADD COLUMN sync_every interval CHECK (sync_every >= interval '0');
-- When the last completed job that read the folder ended, and how many
-- changes it found there (NULL after an import).
ALTER TABLE folders ADD COLUMN synced_at timestamptz;
ALTER TABLE folders ADD COLUMN last_changes bigint;
-- folders.sync_interval and folders.next_sync_at come from 0001. next_sync_at
-- NULL on a synced folder: the scheduler computes it (synced_at + interval,
-- scaled, plus jitter); 'infinity': scheduling is off.
CREATE INDEX folders_unscheduled_idx ON folders (account_id)
    WHERE next_sync_at IS NULL AND synced_at IS NOT NULL AND deleted_at IS NULL;

-- Base interval by role: INBOX 5 min; Sent and Drafts 15 min; archive,
-- all-mail, trash and junk daily; every other folder 30 min.
CREATE FUNCTION mb_sync_base(role text) RETURNS interval IMMUTABLE LANGUAGE sql AS $$
    SELECT CASE
        WHEN role = 'inbox' THEN interval '5 minutes'
        WHEN role IN ('sent', 'drafts') THEN interval '15 minutes'
        WHEN role IN ('archive', 'all', 'trash', 'junk') THEN interval '1 day'
        ELSE interval '30 minutes' END
$$;

-- Activity, applied when a job completes, to each folder it read: after an
-- import the interval is the base; after a sync that found a change in the
-- folder (a message added, flags changed, a message gone, the folder
-- created, renamed or reset) it halves, down to base / 4; after a sync that
-- found none it grows by half, up to base * 4. INBOX: 75 s .. 20 min.
CREATE FUNCTION mb_job_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE folders f SET
        synced_at = now(),
        last_changes = CASE WHEN NEW.type = 'sync' THEN c.n END,
        sync_interval = CASE
            WHEN NEW.type = 'import' OR f.sync_interval IS NULL THEN mb_sync_base(f.role)
            WHEN c.n > 0 THEN greatest(mb_sync_base(f.role) / 4, f.sync_interval / 2)
            ELSE least(mb_sync_base(f.role) * 4, f.sync_interval * 1.5) END,
        next_sync_at = NULL
    FROM (SELECT jf.folder_id,
                 jf.added + jf.flags_changed + (jf.event IS NOT NULL)::int
                 + (SELECT count(*) FROM job_gone g
                    WHERE g.job_id = NEW.id AND g.folder_id = jf.folder_id) AS n
          FROM job_folders jf
          WHERE jf.job_id = NEW.id AND jf.event IS DISTINCT FROM 'deleted') c
    WHERE f.id = c.folder_id;
    RETURN NULL;
END $$;

CREATE TRIGGER sync_jobs_schedule AFTER UPDATE OF status ON sync_jobs
    FOR EACH ROW
    WHEN (NEW.status = 'completed' AND OLD.status <> 'completed')
    EXECUTE FUNCTION mb_job_schedule();

-- Folders imported before this migration are scheduled from now on.
UPDATE folders f SET synced_at = f.updated_at, sync_interval = mb_sync_base(f.role)
WHERE f.uidvalidity IS NOT NULL AND f.deleted_at IS NULL
  AND EXISTS (SELECT 1 FROM sync_jobs j WHERE j.account_id = f.account_id
              AND j.status = 'completed');
