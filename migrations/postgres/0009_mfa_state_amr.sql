-- The login page completes an enrolment one step after confirming it (the recovery codes are
-- shown in between): that last state token carries the `amr` of the factor just enrolled.

alter table mfa_states add column amr text;
