-- One head update per appended batch instead of one per event: the head trigger of 0010 ran
-- a plpgsql function and an UPDATE of the head row for every inserted event (a new row version
-- each time). This statement-level trigger sees the whole insert (its transition table) and
-- advances each tenant's head once, refusing the statement unless the tenant's new events are
-- exactly head+1 .. head+n. A concurrent appender still waits for the head row's lock, then
-- finds the head moved and fails (READ COMMITTED re-checks the condition on the new version).
drop trigger audit_events_advance_head on audit_events;
drop function audit_events_advance_head();

create function audit_events_advance_heads() returns trigger language plpgsql as $$
declare
    tenants bigint;
    advanced bigint;
begin
    with batch as (
        select tenant_id, min(seq) as lo, max(seq) as hi, count(*) as n,
               (array_agg(hash order by seq desc))[1] as last_hash
          from appended
         group by tenant_id
    ), moved as (
        update audit_heads h
           set seq = b.hi, hash = b.last_hash
          from batch b
         where h.tenant_id = b.tenant_id and h.seq = b.lo - 1 and b.n = b.hi - b.lo + 1
        returning 1
    )
    select (select count(*) from batch), (select count(*) from moved) into tenants, advanced;
    if advanced <> tenants then
        raise exception 'audit chain head moved';
    end if;
    return null;
end
$$;

create trigger audit_events_advance_heads after insert on audit_events
    referencing new table as appended
    for each statement execute function audit_events_advance_heads();
