-- Replicas keep revoked token ids in memory and read new ones every second by this time.
alter table revoked_tokens add column revoked_at bigint not null default 0;
create index revoked_tokens_recent on revoked_tokens (revoked_at);
