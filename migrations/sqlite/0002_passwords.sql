-- Sign-in: per-account throttling (shared by replicas) and one-time login tickets.

create table throttles (
    tenant_id text not null,
    username text not null,        -- normalised; rows exist for unknown usernames too
    failures bigint not null default 0,
    next_allowed_at bigint not null default 0,
    updated_at bigint not null,
    primary key (tenant_id, username)
);

create table login_tickets (
    id_hash text primary key,      -- SHA-256 of the ticket: the ticket itself is never stored
    tenant_id text not null,
    client_id text not null,
    user_id text not null,
    auth_time bigint not null,
    amr text not null,
    acr text not null,
    expires_at bigint not null,
    used_at bigint
);
create index login_tickets_expiry on login_tickets (expires_at);
