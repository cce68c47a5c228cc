"""The transparency log's pure parts: RFC 6962 math and C2SP formats; no I/O, no clock.

Importing the package imports `lictor.log.cosignature`, which registers the
cosignature key type (0x04) with `lictor.log.note.parse_verifier_key`; so any
caller of that function can read witness keys, whatever it imported first.
"""

import lictor.log.cosignature  # noqa: F401  (registers key type 0x04)
