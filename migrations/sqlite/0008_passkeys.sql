-- Passwordless passkeys: whether a WebAuthn credential was created as a discoverable
-- credential (resident key), as the browser reported it through the credProps extension.
-- Only those may sign in from the login page without a username.

alter table factors add column discoverable bigint not null default 0;
