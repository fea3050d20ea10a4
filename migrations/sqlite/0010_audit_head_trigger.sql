-- Each appended event advances its tenant's chain head in the same statement: the insert is
-- refused unless the event is the head's direct successor. The writer can then append a batch
-- with one statement (no separate compare-and-swap), and a row inserted behind unicred's back
-- must keep the head consistent too.
create trigger audit_events_advance_head before insert on audit_events
begin
    select raise(abort, 'audit chain head moved')
     where (select seq from audit_heads where tenant_id = new.tenant_id) is not new.seq - 1;
    update audit_heads set seq = new.seq, hash = new.hash where tenant_id = new.tenant_id;
end;
