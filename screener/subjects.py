"""The user id (``users.id``) of a token subject, shared by the gateway and the notifier.

Tables written by the API (webhooks, watchlist, settings) key a user by the token's ``sub`` as text;
``users`` keys them by a UUID: the subject itself when it is one, else a stable UUID of it (subjects
of JWKS providers such as Auth0 are not UUIDs). Whoever joins the two maps a subject with this.
"""

from __future__ import annotations

import uuid

_SUBJECT_NAMESPACE = uuid.UUID("9f3c2b1e-5d7a-4c8e-b6f1-2a4d8e0c7b95")


def user_uuid(subject: str) -> uuid.UUID:
    """Return the user id of a token subject: the subject itself when it is a UUID, else a stable UUID of it."""
    try:
        return uuid.UUID(subject)
    except ValueError:
        return uuid.uuid5(_SUBJECT_NAMESPACE, subject)
