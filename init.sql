-- Schema of the auth service (MySQL / MariaDB): its database and user table. No accounts: the
-- application user and the demo user are development values (dev-seed.sql); a deployment creates
-- its application user with a password of its own (docs/deploy.md).
--
-- Idempotent: applying it again changes nothing (IF NOT EXISTS), so scripts/dev-up.sh applies it
-- on every run and the in-cluster MySQL runs it as an init script.
-- Apply as an administrator, e.g. `mysql -u root < init.sql`.

CREATE DATABASE IF NOT EXISTS auth
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

USE auth;

CREATE TABLE IF NOT EXISTS `user` (
  id INT AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(255) NOT NULL UNIQUE,
  -- An argon2id hash in PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash), never the
  -- plain password (the original stored and compared plaintext).
  password VARCHAR(255) NOT NULL,
  -- Only admins may upload (the gateway checks the token's `admin` claim).
  admin BOOLEAN NOT NULL DEFAULT TRUE,
  -- Tokens carry the generation they were issued at, and a password change moves it on, so
  -- /validate refuses every token issued before.
  token_generation INT UNSIGNED NOT NULL DEFAULT 0,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE = InnoDB;

-- Tables made before token generations existed get the column (MariaDB and MySQL 8 both
-- accept this form; it is a no-op once the column exists).
SET @has_generation = (SELECT COUNT(*) FROM information_schema.columns
  WHERE table_schema = 'auth' AND table_name = 'user' AND column_name = 'token_generation');
SET @add_generation = IF(@has_generation = 0,
  'ALTER TABLE `user` ADD COLUMN token_generation INT UNSIGNED NOT NULL DEFAULT 0 AFTER admin', 'DO 0');
PREPARE add_generation FROM @add_generation;
EXECUTE add_generation;
DEALLOCATE PREPARE add_generation;
