-- The head trigger of 0010 ran once per appended row: a plpgsql call and an update of the head
-- row (a new row version and WAL record) for each event. It now runs once per statement, over
-- the statement's new rows, with the same guarantee: a tenant's rows in one statement must be
-- consecutive and start right after its head (else 'audit chain head moved'), and the head
-- advances to the last of them. Distinct sequence numbers (the primary key) spanning
-- count(*) values are consecutive. A concurrent appender waits for the head row's lock, then
-- finds the head moved (READ COMMITTED re-checks the condition on the new row version).
drop trigger audit_events_advance_head on audit_events;
drop function audit_events_advance_head();

create function audit_events_advance_heads() returns trigger language plpgsql as $$
declare
    r record;
begin
    for r in select tenant_id, min(seq) as lo, max(seq) as hi, count(*) as n
               from new_rows group by tenant_id loop
        update audit_heads h
           set seq = r.hi,
               hash = (select e.hash from new_rows e where e.tenant_id = r.tenant_id and e.seq = r.hi)
         where h.tenant_id = r.tenant_id and h.seq = r.lo - 1 and r.hi - r.lo + 1 = r.n;
        if not found then
            raise exception 'audit chain head moved';
        end if;
    end loop;
    return null;
end
$$;

create trigger audit_events_advance_heads after insert on audit_events
    referencing new table as new_rows
    for each statement execute function audit_events_advance_heads();
