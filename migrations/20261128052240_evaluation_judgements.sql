-- +goose Up
-- modify "evaluation_examples" table
ALTER TABLE "evaluation_examples" ADD COLUMN "judgements" jsonb NULL;

-- +goose Down
-- reverse: modify "evaluation_examples" table
ALTER TABLE "evaluation_examples" DROP COLUMN "judgements";
