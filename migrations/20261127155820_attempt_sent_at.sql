-- +goose Up
-- modify "step_attempts" table
ALTER TABLE "step_attempts" ADD COLUMN "sent_at" timestamptz NULL;

-- +goose Down
-- reverse: modify "step_attempts" table
ALTER TABLE "step_attempts" DROP COLUMN "sent_at";
