-- Schema, application user and demo user of the auth service (MySQL / MariaDB).
--
-- Idempotent: applying it again changes nothing (IF NOT EXISTS, INSERT IGNORE), so
-- scripts/dev-up.sh applies it on every run and the MySQL manifest can mount it as an init script.
-- Apply as an administrator, e.g. `mysql -u root < init.sql`.

CREATE DATABASE IF NOT EXISTS auth
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

-- ---------------------------------------------------------------------------------------------
-- DEVELOPMENT PLACEHOLDER PASSWORD: 'Auth123' is a well-known demo value, shared with the
-- development Kubernetes Secret (MYSQL_PASSWORD) and scripts/dev-up.sh. Never use it for a
-- deployment that holds real data: create the user with a generated password instead and put that
-- password in the auth service's Secret.
-- ---------------------------------------------------------------------------------------------
CREATE USER IF NOT EXISTS 'auth_user'@'%' IDENTIFIED BY 'Auth123';
CREATE USER IF NOT EXISTS 'auth_user'@'localhost' IDENTIFIED BY 'Auth123';

-- The service only reads users (login) and adds, updates or removes them (`auth user add` /
-- `set-password` / `remove`); it never needs DDL.
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.* TO 'auth_user'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.* TO 'auth_user'@'localhost';

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

-- The tutorial's demo user: georgio@email.com / Admin123 (also a DEVELOPMENT PLACEHOLDER).
-- The hash was made once with `auth user add` (argon2id, v=19, m=19456, t=2, p=1: the service's own
-- parameters, so a login for this user takes as long as one for an unknown email). The service
-- verifies any PHC argon2 string.
-- INSERT IGNORE keeps an existing row (and a password changed since) untouched.
INSERT IGNORE INTO `user` (email, password, admin) VALUES (
  'georgio@email.com',
  '$argon2id$v=19$m=19456,t=2,p=1$tu1VESZvpHHmTh2UPuoU2Q$vPL+XS/KsQJT60i4C92J/vWhy+boIVrPOziTyUBwA8k',
  TRUE
);
