-- Tokens carry the generation they were issued at, and a password change moves it on, so
-- /validate refuses every token issued before.
--
-- Conditional, because tables init.sql made before the schema moved here may have the column
-- already (MySQL 8 has no ADD COLUMN IF NOT EXISTS; this form runs on MariaDB and MySQL).
SET @has_generation = (SELECT COUNT(*) FROM information_schema.columns
  WHERE table_schema = DATABASE() AND table_name = 'user' AND column_name = 'token_generation');
SET @add_generation = IF(@has_generation = 0,
  'ALTER TABLE `user` ADD COLUMN token_generation INT UNSIGNED NOT NULL DEFAULT 0 AFTER admin', 'DO 0');
PREPARE add_generation FROM @add_generation;
EXECUTE add_generation;
DEALLOCATE PREPARE add_generation;
