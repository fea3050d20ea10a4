-- Fewer b-trees per appended event (each one is a page written by every group commit):
-- the events and heads tables are clustered on their primary keys (without rowid: one b-tree
-- instead of a rowid table plus its key index), and the per-user index holds only events that name a
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

-- The chain heads too: every append reads and updates its tenant's head (the trigger below).
create table audit_heads_compact (
    tenant_id text primary key,
    seq bigint not null,
    hash text not null,
    base_seq bigint not null default 0,
    base_hash text not null
) without rowid;
insert into audit_heads_compact select tenant_id, seq, hash, base_seq, base_hash from audit_heads;
drop table audit_heads;
alter table audit_heads_compact rename to audit_heads;

create index audit_events_user on audit_events (tenant_id, user_id, seq) where user_id is not null;
create index audit_events_kind on audit_events (tenant_id, kind, seq);

create trigger audit_events_advance_head before insert on audit_events
begin
    select raise(abort, 'audit chain head moved')
     where (select seq from audit_heads where tenant_id = new.tenant_id) is not new.seq - 1;
    update audit_heads set seq = new.seq, hash = new.hash where tenant_id = new.tenant_id;
end;
