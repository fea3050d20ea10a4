-- Fewer b-trees per appended event (each one is a page written by every group commit):
-- the events table is clustered on its primary key (without rowid: one b-tree instead of a
-- rowid table plus its key index), and the per-user index holds only events that name a
-- user (service-token events name none; lookups by user never match null).
create table audit_events_compact (
    tenant_id text not null,
    seq bigint not null,
    at bigint not null,
    kind text not null,
    actor text,
    user_id text,
    client_id text,
    ip_commit text,
    data text not null,            -- RFC 8785 JSON object
    hash text not null,
    ip text,                       -- erasable: not part of the hashed content
    ip_salt text,
    primary key (tenant_id, seq)
) without rowid;
insert into audit_events_compact
    select tenant_id, seq, at, kind, actor, user_id, client_id, ip_commit, data, hash, ip, ip_salt
      from audit_events;
drop table audit_events;
alter table audit_events_compact rename to audit_events;
create index audit_events_user on audit_events (tenant_id, user_id, seq) where user_id is not null;
create index audit_events_kind on audit_events (tenant_id, kind, seq);

create trigger audit_events_advance_head before insert on audit_events
begin
    select raise(abort, 'audit chain head moved')
     where (select seq from audit_heads where tenant_id = new.tenant_id) is not new.seq - 1;
    update audit_heads set seq = new.seq, hash = new.hash where tenant_id = new.tenant_id;
end;
