-- Hand-written: the tenants the connections sweep visits (connections due
-- for a refresh, or steps waiting for a connection): ids only, through a
-- function owned by the schema owner. EXECUTE is granted to the app role by
-- `sluice migrate up`.
-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION sluice_connection_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT tenant_id FROM connections
   WHERE next_refresh_at <= now() AND status IN ('active', 'degraded')
  UNION
  SELECT tenant_id FROM credential_waits WHERE status = 'waiting'
  ORDER BY 1
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_connection_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_connection_tenant_ids();
