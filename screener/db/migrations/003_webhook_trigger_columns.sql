-- The notifier writes failure_count and paused_until on every failed delivery; those writes must not
-- make every rule worker and gateway reload. Only a change a user makes to a webhook notifies.
DROP TRIGGER IF EXISTS webhooks_changed ON webhooks;
CREATE TRIGGER webhooks_changed
    AFTER INSERT OR DELETE OR UPDATE OF user_id, kind, url, secret, chat_id, enabled, rule_types, symbols
    ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION screener_notify_rules_changed();
