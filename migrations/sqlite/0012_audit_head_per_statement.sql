-- PostgreSQL's 0012 turns its per-row head trigger into a per-statement one. SQLite has no
-- statement-level triggers; its per-row trigger (0010, re-created in 0011) stays. This file
-- keeps the two backends' migration lists identical.
select 1;
