-- Runs once, on an empty data volume. The gateway uses "talkgate" (POSTGRES_DB);
-- the test suite uses "test" (see README: `make test`).
CREATE DATABASE test;
