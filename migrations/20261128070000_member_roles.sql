-- Hand-written: the roles of a subject's member row in a tenant, read by the
-- authenticator for every bearer token in one statement (no tenant
-- transaction: the token's tenant is verified before). A function owned by
-- the schema owner; EXECUTE is granted to the app role by
-- `sluice migrate up`. NULL when the subject is not a member.
-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION sluice_member_roles(p_tenant character varying, p_subject character varying) RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT roles FROM members WHERE tenant_id = p_tenant AND subject = p_subject LIMIT 1
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_member_roles(character varying, character varying) FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_member_roles(character varying, character varying);
