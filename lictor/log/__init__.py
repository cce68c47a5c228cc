"""The transparency log's pure parts: RFC 6962 math and C2SP formats; no I/O, no clock."""
