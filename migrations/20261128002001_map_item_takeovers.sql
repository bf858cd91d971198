-- +goose Up
-- modify "map_items" table
ALTER TABLE "map_items" ADD COLUMN "takeovers" bigint NOT NULL DEFAULT 0;

-- +goose Down
-- reverse: modify "map_items" table
ALTER TABLE "map_items" DROP COLUMN "takeovers";
