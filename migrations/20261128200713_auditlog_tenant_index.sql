-- +goose Up
-- drop index "auditlog_tenant_id" from table: "audit_logs"
DROP INDEX "auditlog_tenant_id";

-- +goose Down
-- reverse: drop index "auditlog_tenant_id" from table: "audit_logs"
CREATE INDEX "auditlog_tenant_id" ON "audit_logs" ("tenant_id");
