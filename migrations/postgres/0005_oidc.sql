-- Browser sign-in: login transactions, SSO sessions, authorization codes, refresh-token
-- families and remembered consent. Every secret is stored as a SHA-256 hash.

create table login_transactions (
    id_hash text primary key,
    tenant_id text not null,
    client_id text not null,
    params text not null,          -- the validated authorization request (JSON)
    csrf text not null,
    expires_at bigint not null
);

create table sessions (
    id_hash text primary key,
    tenant_id text not null,
    user_id text not null,
    auth_time bigint not null,
    amr text not null,
    acr text not null,
    created_at bigint not null,
    last_seen bigint not null,
    expires_at bigint not null     -- absolute limit; the idle limit comes from tenant policy
);
create index sessions_user on sessions (tenant_id, user_id);

create table auth_codes (
    code_hash text primary key,
    tenant_id text not null,
    client_id text not null,
    user_id text not null,
    session_id text,
    redirect_uri text not null,
    scope text not null,
    nonce text,
    code_challenge text,
    auth_time bigint not null,
    acr text not null,
    amr text not null,
    expires_at bigint not null,
    used_at bigint,
    issued_jti text,               -- what was issued from it, revoked if the code is replayed
    issued_family text
);

create table refresh_tokens (
    token_hash text primary key,
    family_id text not null,
    tenant_id text not null,
    client_id text not null,
    user_id text not null,
    session_id text,               -- null with offline_access
    scope text not null,
    auth_time bigint not null,
    acr text not null,
    amr text not null,
    family_created_at bigint not null,
    expires_at bigint not null,    -- the family's absolute lifetime
    used_at bigint,
    revoked_at bigint
);
create index refresh_tokens_family on refresh_tokens (family_id);
create index refresh_tokens_session on refresh_tokens (session_id);

create table consents (
    tenant_id text not null,
    user_id text not null,
    client_id text not null,
    scopes text not null,
    created_at bigint not null,
    primary key (tenant_id, user_id, client_id)
);
