-- 0003_unparsed.sql — messages the parser gave up on.
--
-- A message whose parse ran past its work budget, or that stopped a parse
-- process (watchdog, crash), is still stored: its raw bytes are in the blob
-- store and its emails row carries what the scan knew (size, dates, flags),
-- unparsed = true and the reason in defects. A later successful parse of the
-- same blob (a dead letter retried after a fix) fills the row in.
ALTER TABLE emails ADD COLUMN unparsed boolean NOT NULL DEFAULT false;
CREATE INDEX emails_unparsed_idx ON emails (account_id) WHERE unparsed;
