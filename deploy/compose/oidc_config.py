"""Write the demo OpenID provider's configuration (a fresh signing key, one client) to a file.

The provider (tests/support/oidc_provider.mjs under Node) reads it on stdin. The key is made
at every start and never leaves the stack's shared volume; the client secret comes from the
environment, never from the repository.
"""

import json
import os
import sys

from joserfc.jwk import RSAKey

RESOURCE = os.environ.get("PVEMCP_PUBLIC_URL", "http://127.0.0.1:8080/mcp")
SCOPES = "pvemcp pve.read pve.write"

key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
config = {
    "port": int(os.environ.get("OIDC_PORT", "9400")),
    "jwks": {"keys": [key.as_dict(private=True)]},
    "resources": {RESOURCE: SCOPES},
    "access_token_ttl": 900,
    "clients": [
        {
            "client_id": "agent",
            "client_secret": os.environ["PVEMCP_DEMO_CLIENT_SECRET"],
            "scope": SCOPES,
        }
    ],
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(config, out)
