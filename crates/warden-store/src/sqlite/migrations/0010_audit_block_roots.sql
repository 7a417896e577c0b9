-- The Merkle roots of the audit log's blocks of 1024 events (block b: events b*1024+1 to
-- (b+1)*1024), written by the checkpoint that completes them. A proof about one event then reads
-- one root per block and the hashes of at most two blocks' events instead of every event's.
-- Logs written before this migration have no roots for their earlier blocks, and their proofs
-- read every event's hash as before.
CREATE TABLE audit_blocks (
    block INTEGER PRIMARY KEY,
    root BLOB NOT NULL
) STRICT;
