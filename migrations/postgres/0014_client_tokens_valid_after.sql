-- A client's own (client_credentials) tokens issued before this time are refused: a secret
-- rotation ends the tokens the old secret obtained, as a password change does a user's.
alter table clients add column tokens_valid_after bigint not null default 0;
