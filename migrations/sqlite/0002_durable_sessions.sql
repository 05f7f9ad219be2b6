-- paperbot ledger, SQLite schema version 2: durable, resumable sessions.
--
--   * batch_seq:       number of committed batches; each write_batch stores
--                      batch batch_seq + 1, so a retried batch whose commit
--                      already succeeded is recognised and not written twice;
--   * checkpoint_json: the runner's engine/feed state after the last committed
--                      batch (written in the same transaction as its rows);
--   * writer:          who holds (or last held) the session's writer lock,
--                      as the holder described itself; NULL once ended;
--   * heartbeat_at:    wall clock (ms) of the holder's last write;
--   * interrupted_at:  market time (ms) of the last SIGTERM/SIGINT stop.
--
-- The writer lease (lease_expires_at) is replaced by a lock that dies with its
-- holder: an flock on <database>.locks/<session>.lock. writer_token stays: every
-- write checks it in its transaction (fencing).

ALTER TABLE sessions ADD COLUMN batch_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN checkpoint_json TEXT;
ALTER TABLE sessions ADD COLUMN writer TEXT;
ALTER TABLE sessions ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE sessions ADD COLUMN interrupted_at INTEGER;
ALTER TABLE sessions DROP COLUMN lease_expires_at;
