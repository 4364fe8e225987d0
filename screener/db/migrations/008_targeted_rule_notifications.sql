-- Rules change notifications say what changed, so each consumer reloads only that (issue 13).
--
-- 001_core.sql notified 'screener_rules_changed' once per statement on alert_rules, user_settings
-- and webhooks with only the table name, so every write (a preferences-only POST /settings too)
-- made every rules worker and gateway reload and recompile everything. Now one notification per
-- changed row carries a small JSON payload:
--   {"table": "alert_rules", "rule_type": "...", "owner": "..." | null}
--   {"table": "user_settings", "user_id": "..."}
-- user_settings notifies only when the rule switches change; webhooks no longer notify this channel
-- (the notifier reads webhooks per delivery; nothing listened for them here).

CREATE OR REPLACE FUNCTION screener_notify_rule_row() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('screener_rules_changed',
            json_build_object('table', 'alert_rules', 'rule_type', OLD.rule_type, 'owner', OLD.owner)::text);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.rule_type IS DISTINCT FROM OLD.rule_type) THEN
        PERFORM pg_notify('screener_rules_changed',
            json_build_object('table', 'alert_rules', 'rule_type', NEW.rule_type, 'owner', NEW.owner)::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION screener_notify_switches_row() RETURNS trigger AS $$
DECLARE
    changed_user text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed_user := OLD.user_id;
    ELSE
        changed_user := NEW.user_id;
    END IF;
    PERFORM pg_notify('screener_rules_changed',
        json_build_object('table', 'user_settings', 'user_id', changed_user)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS alert_rules_changed ON alert_rules;
CREATE TRIGGER alert_rules_changed AFTER INSERT OR UPDATE OR DELETE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION screener_notify_rule_row();

DROP TRIGGER IF EXISTS user_settings_changed ON user_settings;
CREATE TRIGGER user_settings_inserted AFTER INSERT ON user_settings
    FOR EACH ROW WHEN (NEW.rules IS DISTINCT FROM '{}'::jsonb) EXECUTE FUNCTION screener_notify_switches_row();
CREATE TRIGGER user_settings_switched AFTER UPDATE OF rules, user_id ON user_settings
    FOR EACH ROW WHEN (OLD.rules IS DISTINCT FROM NEW.rules OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION screener_notify_switches_row();
CREATE TRIGGER user_settings_deleted AFTER DELETE ON user_settings
    FOR EACH ROW WHEN (OLD.rules IS DISTINCT FROM '{}'::jsonb) EXECUTE FUNCTION screener_notify_switches_row();

DROP TRIGGER IF EXISTS webhooks_changed ON webhooks;
