"""The commented config that ``wsguard config init`` writes: the secure defaults."""

from __future__ import annotations

CONFIG_TEMPLATE = """\
# wsguard configuration. Every setting can also come from the environment:
# WSGUARD_<KEY> for a top-level key, WSGUARD_<SECTION>_<KEY> for the others
# (WSGUARD_JWT_SECRET, WSGUARD_SERVER_PORT); lists are comma-separated there.
# The environment wins over this file; command-line flags win over both.

# "development" allows http://localhost:PORT and http://127.0.0.1:PORT as
# origins and makes a random JWT secret per run when none is set.
mode = "development"

[server]
host = "127.0.0.1"
port = 8765
path = "/ws"              # the WebSocket endpoint; other paths get 404
open_timeout = 10.0       # seconds to complete the opening handshake
compression = false       # permessage-deflate; the inflated size stays bounded
ping_interval = 20.0      # seconds between server pings
ping_timeout = 20.0       # seconds to wait for a pong
close_timeout = 10.0

[jwt]
algorithms = ["HS256"]    # never "none"; HMAC and public-key algorithms don't mix
# secret = "..."          # HS*: at least 32 random bytes; prefer WSGUARD_JWT_SECRET
# public_key_file = "jwt-public.pem"   # RS*/PS*/ES*/EdDSA
# issuer = "https://auth.example"      # checked when set
# audience = "wsguard"                 # checked when set
leeway = 0.0              # seconds of clock skew on exp/nbf/iat; at most 60
roles_claim = "roles"     # claim holding a list of role names

[credentials]
bearer_header = true      # Authorization: Bearer <jwt>
subprotocol = true        # Sec-WebSocket-Protocol: wsguard.v1, wsguard.bearer.<jwt>
query_token = false       # ?token=<jwt>: tokens in URLs leak into logs

[origins]
allowed = []              # exact origins, e.g. ["https://app.example"]
require = false           # refuse handshakes without an Origin header

[messages]
max_message_bytes = 65536 # bigger messages close with 1009, compressed or not
max_depth = 32            # deepest nesting of objects and arrays
max_clock_skew = 300.0    # seconds a message timestamp may be off
csrf_exempt = ["health-check", "token_refresh", "ack"]
"""
