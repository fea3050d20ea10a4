-- Each appended event advances its tenant's chain head in the same statement: the insert is
-- refused unless the event is the head's direct successor. The writer can then append a batch
-- without a separate compare-and-swap, and a row inserted behind unicred's back must keep the
-- head consistent too. A concurrent appender waits for the head row's lock, then finds the
-- head moved and fails (READ COMMITTED re-checks the condition on the new row version).
create function audit_events_advance_head() returns trigger language plpgsql as $$
begin
    update audit_heads set seq = new.seq, hash = new.hash
     where tenant_id = new.tenant_id and seq = new.seq - 1;
    if not found then
        raise exception 'audit chain head moved';
    end if;
    return new;
end
$$;

create trigger audit_events_advance_head before insert on audit_events
    for each row execute function audit_events_advance_head();
