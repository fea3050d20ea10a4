-- WebAuthn: credentials are factors of kind `webauthn` (credential id, and the serialized
-- webauthn-rs credential with its signature counter and backup flags); ceremony state lives
-- here for a few minutes, single use, so any replica can finish a ceremony another began.

alter table factors add column cred_id text;
alter table factors add column credential text;
create unique index factors_cred_id on factors (tenant_id, cred_id);

create table webauthn_challenges (
    id_hash text primary key,      -- SHA-256 of the challenge bytes
    tenant_id text not null,
    user_id text not null,
    client_id text,                -- the sign-in API client (authentication only)
    kind text not null,            -- register | authenticate
    state text not null,           -- serialized webauthn-rs ceremony state (JSON)
    expires_at bigint not null,
    used_at bigint
);
create index webauthn_challenges_expiry on webauthn_challenges (expires_at);
