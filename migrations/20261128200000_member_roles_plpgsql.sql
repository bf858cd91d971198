-- Hand-written: sluice_member_roles (a member's roles, read at every
-- authenticated API request) in PL/pgSQL instead of SQL. Postgres plans a
-- SQL function's query again at every call (it cannot inline a SECURITY
-- DEFINER function), whatever its plan_cache_mode; PL/pgSQL keeps the plan
-- for the session. Same signature, privileges, search path and result.
-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_member_roles(p_tenant character varying, p_subject character varying) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public SET plan_cache_mode = auto AS $$
BEGIN
  RETURN (SELECT m.roles FROM members m WHERE m.tenant_id = p_tenant AND m.subject = p_subject LIMIT 1);
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_member_roles(p_tenant character varying, p_subject character varying) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public SET plan_cache_mode = auto AS $$
  SELECT roles FROM members WHERE tenant_id = p_tenant AND subject = p_subject LIMIT 1
$$;
-- +goose StatementEnd
