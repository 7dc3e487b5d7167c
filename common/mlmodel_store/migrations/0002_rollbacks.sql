-- A rollout the operator rolled back names the generation it went back to (docs/rollouts.md).
ALTER TABLE rollouts ADD COLUMN rolled_back_to BIGINT;
