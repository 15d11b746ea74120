-- DEVELOPMENT ONLY: the accounts of the local development setup, applied by the local set-up and
-- the tests after init.sql AND the auth service's migrations (services/auth/migrations/: the
-- `user` table it inserts into; `testkit::migrate_auth` or a first start of auth applies
-- them). Never apply it to a database that holds real data: both
-- passwords below are public. scripts/pods-up.sh and `scripts/minikube-up.sh --demo-user` take
-- only the demo user from it.
--
-- Idempotent (IF NOT EXISTS, INSERT IGNORE). Apply as an administrator after the migrations.

-- ---------------------------------------------------------------------------------------------
-- DEVELOPMENT PLACEHOLDER PASSWORD: 'Auth123' is a well-known demo value, used by
-- scripts/dev-up.sh (MYSQL_PASSWORD) and the tests. Never use it for a
-- deployment that holds real data: create the user with a generated password instead and put that
-- password in the auth service's Secret.
-- ---------------------------------------------------------------------------------------------
CREATE USER IF NOT EXISTS 'auth_user'@'%' IDENTIFIED BY 'Auth123';
CREATE USER IF NOT EXISTS 'auth_user'@'localhost' IDENTIFIED BY 'Auth123';

-- The service reads users (login) and adds, updates or removes them (`auth user add` /
-- `set-password` / `remove`), and applies its own migrations when it starts (CREATE, ALTER,
-- INDEX), on its own database only.
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON auth.* TO 'auth_user'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON auth.* TO 'auth_user'@'localhost';

USE auth;

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
