-- Accounts (client.md sections 1 and 4, decisions 4-8): users, invites and password-reset tokens.
-- A user's id is the `sub` of their tokens; the other tables key users by that id as text.

CREATE TABLE IF NOT EXISTS users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email              text CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254),
    password_hash      text,                 -- argon2id; NULL for users provisioned from an external token
    role               text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('trial', 'active', 'expired', 'canceled')),
    trial_ends_at      timestamptz,
    plan               text CHECK (plan IN ('monthly', 'yearly')),
    plan_activated_at  timestamptz,
    plan_expires_at    timestamptz,
    tv_addon_active    boolean NOT NULL DEFAULT false,
    tv_username        text,
    disabled_at        timestamptz,          -- set: the account may not sign in or use its tokens
    tokens_valid_after timestamptz,          -- tokens issued before this instant are refused (password reset)
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_login_at      timestamptz
);
-- One account per address whatever its case; NULL (an external user without an e-mail claim) repeats freely.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS invites (
    code       text PRIMARY KEY CHECK (length(code) BETWEEN 8 AND 64),
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    used_by    uuid REFERENCES users (id) ON DELETE SET NULL
);

-- Only the SHA-256 of a reset token is kept: a read of this table cannot reset anyone's password.
CREATE TABLE IF NOT EXISTS password_resets (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX IF NOT EXISTS password_resets_user_idx ON password_resets (user_id, created_at);
