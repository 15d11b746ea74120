-- The auth service's database (MySQL / MariaDB). Its tables are not here: they are the sqlx
-- migrations in services/auth/migrations/, which the auth service applies when it starts (so its
-- MySQL user needs CREATE, ALTER and INDEX on this database besides SELECT, INSERT, UPDATE and
-- DELETE; docs/deploy.md). No accounts: the application user and the demo user are development
-- values (dev-seed.sql, applied after the migrations); a deployment creates its application user
-- with a password of its own (docs/deploy.md).
--
-- Idempotent (IF NOT EXISTS): applying it again changes nothing, so the local set-up applies it on
-- every run and the in-cluster MySQL runs it as an init script.
-- Apply as an administrator, e.g. `mysql -u root < init.sql`.

CREATE DATABASE IF NOT EXISTS auth
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;
