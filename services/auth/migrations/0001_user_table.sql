-- The auth service's one table. IF NOT EXISTS: databases whose table init.sql made before the
-- schema moved here keep it (0002 brings it up to date).
CREATE TABLE IF NOT EXISTS `user` (
  id INT AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(255) NOT NULL UNIQUE,
  -- An argon2id hash in PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash), never the
  -- plain password (the original stored and compared plaintext).
  password VARCHAR(255) NOT NULL,
  -- Only admins may upload (the gateway checks the token's `admin` claim).
  admin BOOLEAN NOT NULL DEFAULT TRUE,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
) ENGINE = InnoDB;
