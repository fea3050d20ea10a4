-- One ceremony per slot: the login transaction (passwordless), or the user, client and kind
-- (second factor, registration). A new options request replaces the slot's earlier ceremony
-- instead of adding a row, so repeated requests cannot grow this table beyond the number of
-- live transactions and users. Rows from before this migration have no slot (and expire).
alter table webauthn_challenges add column slot text;
create unique index webauthn_challenges_slot on webauthn_challenges (slot);
