-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "step_counts" jsonb NULL;

-- +goose Down
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "step_counts";
