-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "trace_id" character varying NULL;

-- +goose Down
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "trace_id";
