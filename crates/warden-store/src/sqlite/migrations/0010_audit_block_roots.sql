-- The Merkle roots of the audit log's blocks of 1024 events (block b: events b*1024+1 to
-- (b+1)*1024), written by the checkpoint that completes them. A proof about one event then reads
-- one root per block and the hashes of at most two blocks' events instead of every event's.
-- `keys` is a Bloom filter of the users, targets and requests the block's events name (see
-- `block_keys.rs`): a search by one of them reads only the blocks that may hold it.
-- Logs written before this migration have no roots or filters for their earlier blocks: their
-- proofs read every event's hash, and their searches every event, as before.
CREATE TABLE audit_blocks (
    block INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    keys BLOB
) STRICT;
