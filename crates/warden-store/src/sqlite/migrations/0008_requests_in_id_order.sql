-- Request ids are UUIDv7 and a request's `created_at` is the millisecond its id carries, so
-- the primary key's index already holds the requests in creation order: listings read it
-- newest first and a period's requests are a range of it. No query used the index on
-- (requester, created_at): the listing's optional filters keep SQLite from choosing it. Each
-- of the two cost every new request one more page written in its commit.
DROP INDEX requests_created;
DROP INDEX requests_requester;
