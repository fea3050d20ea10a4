-- Second factors: TOTP (seed encrypted with the master key, bound to tenant and factor id;
-- last accepted step for replay protection), recovery codes (keyed HMACs), and the state
-- tokens of the sign-in API between the password and the second factor.

create table factors (
    id text primary key,
    tenant_id text not null,
    user_id text not null,
    kind text not null,            -- totp
    name text not null,
    secret_ct blob,
    master_version bigint,
    confirmed bigint not null default 0,
    last_step bigint,
    created_at bigint not null,
    last_used_at bigint
);
create index factors_user on factors (tenant_id, user_id);

create table recovery_codes (
    tenant_id text not null,
    user_id text not null,
    code_hash text not null,
    key_version bigint not null,
    used_at bigint,
    primary key (tenant_id, user_id, code_hash)
);

create table mfa_states (
    id_hash text primary key,
    tenant_id text not null,
    client_id text not null,
    user_id text not null,
    purpose text not null,         -- mfa | enroll
    throttle_key text not null,
    failures bigint not null default 0,
    expires_at bigint not null,
    used_at bigint
);
