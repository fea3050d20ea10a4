-- Foundation schema. Ids are text (UUIDs), times are unix seconds, flags are 0/1 integers,
-- so the same SQL runs on SQLite and PostgreSQL.

create table key_versions (
    kind text not null,            -- master | pepper | hmac
    version bigint not null,
    fingerprint text not null,
    created_at bigint not null,
    primary key (kind, version)
);

create table tenants (
    id text primary key,
    slug text not null unique,     -- kept after deletion: deleted slugs are never reused
    name text not null,
    policy text not null default '{}',
    created_at bigint not null,
    updated_at bigint not null,
    deleted_at bigint
);

create table users (
    id text primary key,
    tenant_id text not null references tenants(id),
    username text not null,
    email text,
    display_name text,
    status text not null default 'active',   -- active | disabled | locked
    password_hash text,
    pepper_version bigint,
    password_temporary bigint not null default 0,
    tokens_valid_after bigint not null default 0,
    created_at bigint not null,
    updated_at bigint not null,
    unique (tenant_id, username)
);

create table clients (
    id text primary key,           -- the client_id, globally unique
    tenant_id text not null references tenants(id),
    name text not null,
    secret_hash text,              -- HMAC-SHA-256 under the hmac key version below
    secret_key_version bigint,
    token_endpoint_auth_method text not null,
    redirect_uris text not null default '[]',
    post_logout_redirect_uris text not null default '[]',
    grant_types text not null default '[]',
    scopes text not null default '[]',
    resources text not null default '[]',
    web_origins text not null default '[]',
    authn_api bigint not null default 0,
    consent_required bigint not null default 0,
    id_token_signed_response_alg text,
    platform_admin bigint not null default 0,  -- the bootstrap client
    created_at bigint not null,
    updated_at bigint not null
);
create index clients_tenant on clients (tenant_id);

create table signing_keys (
    kid text primary key,
    tenant_id text not null references tenants(id),
    alg text not null,             -- ES256 | RS256 | EdDSA
    state text not null,           -- next | current | retired
    public_jwk text not null,
    private_ct bytea not null,      -- AEAD under the master key, bound to tenant and kid
    master_version bigint not null,
    created_at bigint not null,
    retire_until bigint            -- retired keys leave the JWKS after this time
);
create index signing_keys_tenant on signing_keys (tenant_id);

create table revoked_tokens (
    jti text primary key,
    tenant_id text not null,
    expires_at bigint not null
);
