-- PostgreSQL's head trigger now runs once per statement (see migrations/postgres/0012).
-- SQLite has no statement-level triggers: its per-row trigger of 0010 stays (there a row's
-- trigger is a few in-process b-tree operations, not a plpgsql call and a WAL record).
select 1;
