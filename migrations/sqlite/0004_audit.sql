-- Tamper-evident audit trail: one hash chain per tenant.
-- hash(seq) = SHA-256(hash(seq - 1) ‖ RFC 8785 JSON of the event's hashed fields), hex;
-- the chain of a tenant starts from 32 zero bytes. Personal data (the client IP) lives only in
-- the erasable columns `ip`/`ip_salt`; the chain holds a salted commitment to it.

create table audit_events (
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
);
create index audit_events_user on audit_events (tenant_id, user_id, seq);
create index audit_events_kind on audit_events (tenant_id, kind, seq);

-- The head of each chain. Appends lock this row first, so replicas sharing one database build
-- one linear chain. After pruning, the chain starts at (base_seq, base_hash): a signed checkpoint.
create table audit_heads (
    tenant_id text primary key,
    seq bigint not null,
    hash text not null,
    base_seq bigint not null default 0,
    base_hash text not null
);

-- Per-tenant Ed25519 checkpoint keys; public keys are never withdrawn.
create table audit_keys (
    kid text primary key,
    tenant_id text not null,
    public_jwk text not null,
    private_ct blob not null,      -- AEAD under the master key, bound to tenant and kid
    master_version bigint not null,
    created_at bigint not null
);
create index audit_keys_tenant on audit_keys (tenant_id);

-- Signed statements "the chain of tenant T had head H at seq N at time A" (compact JWS).
create table audit_checkpoints (
    tenant_id text not null,
    seq bigint not null,
    hash text not null,
    at bigint not null,
    kid text not null,
    jws text not null,
    primary key (tenant_id, seq)
);
