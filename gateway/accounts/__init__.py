"""Accounts: users, sign-in, invites, password reset and plans (client.md section 1 and 4, decisions 4-8).

``users`` is the user row and the client's User object, ``store`` its SQL, ``passwords`` argon2id off
the event loop, ``tokens`` the gateway's own JWTs, ``mail`` the reset mail, ``billing`` the seam of a
billing provider, ``service`` wires them into the app, ``routes`` serves them and ``cli`` is
``screener users``.
"""
