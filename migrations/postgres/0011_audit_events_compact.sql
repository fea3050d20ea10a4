-- The per-user index holds only events that name a user (service-token events name none;
-- lookups by user never match null): one index entry less per such append.
drop index audit_events_user;
create index audit_events_user on audit_events (tenant_id, user_id, seq) where user_id is not null;
