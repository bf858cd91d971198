-- +goose Up
-- modify "approval_requests" table
ALTER TABLE "approval_requests" ALTER COLUMN "step_id" DROP NOT NULL, ALTER COLUMN "step_run_id" DROP NOT NULL, ALTER COLUMN "run_id" DROP NOT NULL, ADD COLUMN "kind" character varying NOT NULL DEFAULT 'STEP', ADD COLUMN "workflow_id" character varying NULL, ADD COLUMN "version_id" character varying NULL, ADD COLUMN "target_environment_id" character varying NULL, ADD COLUMN "release_id" character varying NULL, ADD COLUMN "requested_by" character varying NULL, ADD COLUMN "required_approvals" bigint NOT NULL DEFAULT 0, ADD COLUMN "approvals" jsonb NULL, ADD COLUMN "deployment_id" character varying NULL;
-- create index "approval_deployment_pending" to table: "approval_requests"
CREATE INDEX "approval_deployment_pending" ON "approval_requests" ("tenant_id", "expires_at") WHERE (((kind)::text = 'DEPLOYMENT'::text) AND ((status)::text = 'pending'::text));
-- modify "environments" table
ALTER TABLE "environments" ADD COLUMN "protection" jsonb NULL;

-- +goose Down
-- reverse: modify "environments" table
ALTER TABLE "environments" DROP COLUMN "protection";
-- reverse: create index "approval_deployment_pending" to table: "approval_requests"
DROP INDEX "approval_deployment_pending";
-- reverse: modify "approval_requests" table
ALTER TABLE "approval_requests" DROP COLUMN "deployment_id", DROP COLUMN "approvals", DROP COLUMN "required_approvals", DROP COLUMN "requested_by", DROP COLUMN "release_id", DROP COLUMN "target_environment_id", DROP COLUMN "version_id", DROP COLUMN "workflow_id", DROP COLUMN "kind", ALTER COLUMN "run_id" SET NOT NULL, ALTER COLUMN "step_run_id" SET NOT NULL, ALTER COLUMN "step_id" SET NOT NULL;
