"""Cloned voices with recorded consent: statements, local checks, provider enrollment, use and revocation.

A voice is enrolled from a sample recording plus a consent recording in which the speaker reads a
statement the gateway generated with a one-time code. Local checks (format, duration, speech
present, transcript matches the statement, same speaker) run before anything is sent to the
cloud; the consent record and an append-only audit log are kept with the voice (gateway/db).
"""
