"""JSON schemas of the gateway's request bodies and responses, for ``/api/openapi.json``.

They say what the handlers accept and answer, no stricter than the handlers (a body the schema
refuses is refused by the handler too); rules the schema language cannot state (an expression's
grammar, a rule id that must exist, a URL the outbound policy allows) are the handler's 400.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

OBJECT: Schema = {"type": "object"}
ARRAY: Schema = {"type": "array"}
STRING_LIST: Schema = {"type": "array", "items": {"type": "string"}}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = True) -> Schema:
    """Return an object schema (``closed``: no other properties)."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


# --- responses ---------------------------------------------------------------------------------------
STATUS = obj({"status": {"type": "string"}}, ("status",), closed=False)
READY = obj({"status": {"type": "string"}, "down": STRING_LIST}, ("status", "down"), closed=False)
RULE = obj(
    {
        "id": {"type": "string"},
        "rule_type": {"type": "string"},
        "name": {"type": "string"},
        "enabled": {"type": "boolean"},
        "expression": {"type": "string"},
        "custom": {"type": "boolean"},
    },
    ("id", "rule_type", "name", "enabled", "expression", "custom"),
    closed=False,
)
RULES = obj({"rules": {"type": "array", "items": RULE}, "count": {"type": "integer"}}, ("rules", "count"), closed=False)
TOGGLED = obj({"rule_type": {"type": "string"}, "enabled": {"type": "boolean"}}, ("rule_type", "enabled"), closed=False)
DELETED = obj({"id": {"type": "string"}, "deleted": {"type": "boolean"}}, ("id", "deleted"), closed=False)
WATCHLIST = obj(
    {"symbols": STRING_LIST, "count": {"type": "integer"}, "limit": {"type": "integer"}},
    ("symbols", "count"),
    closed=False,
)
WEBHOOK = obj(
    {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "webhook_type": {"type": "string"},
        "webhook_url": {"type": "string"},
        "scope": {"type": "string"},
        "is_enabled": {"type": "boolean"},
        "has_secret": {"type": "boolean"},
    },
    ("id", "name", "webhook_type", "webhook_url", "scope", "is_enabled", "has_secret"),
    closed=False,
)
WEBHOOKS = obj(
    {"webhooks": {"type": "array", "items": WEBHOOK}, "count": {"type": "integer"}, "limit": {"type": "integer"}},
    ("webhooks", "count", "limit"),
    closed=False,
)
WEBHOOK_TEST = obj(
    {"id": {"type": "string"}, "status": {"const": "sent"}, "http_status": {"type": ["integer", "null"]}},
    ("id", "status"),
    closed=False,
)
DELIVERIES = obj({"deliveries": ARRAY}, ("deliveries",), closed=False)
SETTINGS = obj(
    {
        "user_id": {"type": "string"},
        "rules": OBJECT,
        "enabled_rules": STRING_LIST,
        "webhooks": ARRAY,
        "watchlist": STRING_LIST,
        "preferences": OBJECT,
    },
    ("user_id", "rules", "enabled_rules", "webhooks", "watchlist", "preferences"),
    closed=False,
)
TV_USERNAME = obj({"tv_username": {"type": "string"}}, ("tv_username",), closed=False)
OPENAPI = obj({"openapi": {"type": "string"}, "paths": OBJECT}, ("openapi", "paths"), closed=False)
_ISO_OR_NULL: Schema = {"type": ["string", "null"], "description": "ISO 8601 instant"}
# client.md section 1: the User object of /api/me, refresh, and billing confirm.
USER = obj(
    {
        "id": {"type": "string"},
        "email": {"type": "string"},
        "role": {"type": "string", "enum": ["user", "admin"]},
        "status": {"type": "string", "enum": ["trial", "active", "expired", "canceled"]},
        "trial_ends_at": _ISO_OR_NULL,
        "plan": {"type": ["string", "null"], "enum": ["monthly", "yearly", None]},
        "plan_activated_at": _ISO_OR_NULL,
        "plan_expires_at": _ISO_OR_NULL,
        "tv_addon_active": {"type": "boolean"},
        "created_at": {"type": "string"},
        "last_login_at": _ISO_OR_NULL,
    },
    ("id", "email", "role", "status", "plan", "plan_expires_at", "tv_addon_active", "created_at"),
    closed=False,
)
# client.md section 4: BillingInfo.
BILLING_INFO = obj(
    {
        "plan": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "plan_expires_at": _ISO_OR_NULL,
        "whop_membership_id": NULLABLE_STRING,
        "tv_addon_active": {"type": "boolean"},
        "tv_username": NULLABLE_STRING,
        "manage_url": {"type": "string", "description": "the Whop membership's self-service page; empty: none"},
    },
    ("plan", "status", "plan_expires_at", "whop_membership_id", "tv_addon_active", "tv_username", "manage_url"),
    closed=False,
)
CHECKOUT_URL = obj({"checkout_url": {"type": "string"}}, ("checkout_url",), closed=False)
WEBHOOK_RECEIVED = obj(
    {"received": {"type": "boolean"}, "duplicate": {"type": "boolean"}, "applied": {"type": "boolean"}},
    ("received",),
    closed=False,
)

# --- request bodies ------------------------------------------------------------------------------------
ENABLED = obj({"enabled": {"type": "boolean"}}, ("enabled",))
CHECKOUT = obj(
    {
        "plan": {
            "type": "string",
            "enum": [
                "screener_monthly",
                "screener_yearly",
                "bundle_monthly",
                "bundle_yearly",
                "tv_monthly",
                "tv_yearly",
            ],
        }
    },
    ("plan",),
)
NEW_RULE = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 120, "pattern": r"\S"},
        "expression": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": r"\S"},
        "description": {"type": ["string", "null"], "maxLength": 500},
        "cooldown": {"type": "integer", "minimum": 0, "maximum": 10080},
        "cooldown_seconds": {"type": "integer", "minimum": 0, "maximum": 604800},
        "frequency": {"enum": ["once_per_bar_close", "cooldown", "on_change"]},
        "live": {"type": "boolean"},
        "enabled": {"type": "boolean"},
        "min_coverage": {"type": "number", "minimum": 0, "maximum": 1},
    },
    ("name", "expression"),
)
SYMBOL = obj({"symbol": {"type": "string", "minLength": 1, "maxLength": 40}}, ("symbol",))
SYMBOLS = obj({"symbols": {"type": "array", "items": {"type": "string"}, "maxItems": 50}}, ("symbols",))
TV = obj({"tv_username": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"}}, ("tv_username",))
_WEBHOOK_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"},
    "webhook_type": {"enum": ["discord", "telegram", "slack", "http"]},
    "webhook_url": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": r"\S"},
    "scope": {"enum": ["all", "watchlist"]},
    "is_enabled": {"type": "boolean"},
    "config": {"type": ["object", "null"]},
    "rule_types": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 200},
    "symbols": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 500},
    "secret": {"type": ["string", "null"], "maxLength": 200},
}
NEW_WEBHOOK = obj(_WEBHOOK_FIELDS, ("name", "webhook_type", "webhook_url"))
WEBHOOK_CHANGE = {
    **obj(
        {
            **_WEBHOOK_FIELDS,
            **{f: {} for f in ("id", "user_id", "max_alerts_per_minute", "created_at", "updated_at", "has_secret")},
        }
    ),
    "minProperties": 1,
}
SETTINGS_CHANGE = obj(
    {
        "rules": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "enabled_rules": {"type": "array", "items": {"type": "string"}},
        "preferences": {"type": ["object", "null"]},
    }
)
