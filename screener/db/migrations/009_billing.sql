-- Billing through Whop (client.md section 4, decision 7): the checkouts the gateway started, the Whop
-- memberships it knows of, and the webhook deliveries it has applied (replay-safe, idempotent).

-- One checkout the gateway created: `ref` is the gateway's own reference, put into Whop's redirect URL
-- (`?session=<ref>`) and into the checkout configuration's metadata; `checkout_id` is Whop's `ch_...`.
CREATE TABLE IF NOT EXISTS billing_checkouts (
    ref           text PRIMARY KEY CHECK (length(ref) BETWEEN 8 AND 64),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_slug     text NOT NULL,
    checkout_id   text NOT NULL UNIQUE,
    purchase_url  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    payment_id    text,
    membership_id text
);
CREATE INDEX IF NOT EXISTS billing_checkouts_user_idx ON billing_checkouts (user_id, created_at);

-- What the gateway last learnt of a Whop membership (`mem_...`); the user row's plan is derived from these.
-- `observed_at` orders the updates: an older event arriving late never undoes a newer one.
CREATE TABLE IF NOT EXISTS billing_memberships (
    membership_id        text PRIMARY KEY,
    user_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_slug            text NOT NULL,
    status               text NOT NULL,
    renewal_period_end   timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    manage_url           text,
    refunded_at          timestamptz,
    observed_at          timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_memberships_user_idx ON billing_memberships (user_id);

-- Every applied webhook delivery by its `webhook-id`: a redelivery or a replay is answered and ignored.
CREATE TABLE IF NOT EXISTS billing_webhook_events (
    webhook_id  text PRIMARY KEY CHECK (length(webhook_id) BETWEEN 1 AND 200),
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS billing_webhook_events_received_idx ON billing_webhook_events (received_at);
