-- Hand-written: the SQL functions on the run hot path keep Postgres's own
-- plan caching (plan_cache_mode auto) whatever their caller's mode. API
-- transactions ask for custom plans (internal/store, BeginTenant), which
-- made Postgres plan these functions' queries again at every call: the
-- admission count of sluice_admit_steps at every startRun, the release of
-- held steps, a capped tenant's slot claim, a member's roles at every
-- request. Their queries read by tenant with the indexes made for them;
-- the run state machine's transactions already run them with cached plans.
-- +goose Up
ALTER FUNCTION sluice_admit_steps(character varying, character varying, character varying[], timestamptz, integer) SET plan_cache_mode = auto;
ALTER FUNCTION sluice_release_held(character varying, timestamptz, integer) SET plan_cache_mode = auto;
ALTER FUNCTION sluice_claim_slot(character varying, character varying, timestamptz) SET plan_cache_mode = auto;
ALTER FUNCTION sluice_member_roles(character varying, character varying) SET plan_cache_mode = auto;

-- +goose Down
ALTER FUNCTION sluice_admit_steps(character varying, character varying, character varying[], timestamptz, integer) RESET plan_cache_mode;
ALTER FUNCTION sluice_release_held(character varying, timestamptz, integer) RESET plan_cache_mode;
ALTER FUNCTION sluice_claim_slot(character varying, character varying, timestamptz) RESET plan_cache_mode;
ALTER FUNCTION sluice_member_roles(character varying, character varying) RESET plan_cache_mode;
