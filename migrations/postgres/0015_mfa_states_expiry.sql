-- Expired sign-in state tokens are purged every minute (they were never deleted).
create index mfa_states_expires_at on mfa_states (expires_at);
