-- The leaf hashes of archived events that share a block of 1024 with events still in the live
-- log (an archive cuts at a checkpoint, mostly inside a block). Proofs about the live events of
-- that block need every leaf of it; with these the live log can still give them. An archive
-- keeps those of the block it cuts into and drops those of blocks it archives whole.
CREATE TABLE archived_leaves (
    seq INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL
) STRICT;
