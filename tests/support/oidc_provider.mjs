// A real OpenID provider (npm oidc-provider v9) on loopback for the test suite.
//
// It issues RFC 9068 JWT access tokens through the client_credentials grant with RFC 8707
// resource indicators: only the configured resource URIs are valid targets (anything else is
// 400 invalid_target) and each resource grants its own scopes, so `aud` is the resource URI.
//
// Config is one JSON object on stdin (never argv: it holds private keys and secrets):
//   {"port": 0, "jwks": {"keys": [private JWKs; the first of an algorithm signs]},
//    "resources": {"<uri>": "space separated scopes"}, "access_token_ttl": 300,
//    "clients": [{"client_id": "...", "client_secret": "...", "scope": "..."}]}
// When listening it prints {"issuer": "http://127.0.0.1:<port>"} as one line on stdout,
// built from the real port (port 0 picks a free one). SIGTERM stops it.
import { once } from 'node:events';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const config = await readStdin();
const resources = config.resources ?? {};
const ttl = config.access_token_ttl ?? 300;
const signingAlg = config.jwks.keys[0].alg ?? 'RS256';
const allScopes = new Set(Object.values(resources).flatMap((s) => s.split(' ')));

function configuration() {
  return {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      scope: c.scope,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      // With only an EC key the default RS256 ID-token algorithm would fail validation.
      id_token_signed_response_alg: signingAlg,
    })),
    jwks: config.jwks,
    scopes: ['openid', ...allScopes],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: () => false,
        getResourceServerInfo: (_ctx, resourceIndicator) => {
          if (!Object.hasOwn(resources, resourceIndicator)) throw new errors.InvalidTarget();
          return {
            scope: resources[resourceIndicator],
            audience: resourceIndicator,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: signingAlg } },
          };
        },
      },
    },
  };
}

// Listen first: the issuer must carry the real port, and the provider is built with it.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = createServer((req, res) => handler(req, res));
server.listen(config.port ?? 0, '127.0.0.1');
await once(server, 'listening');
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, configuration());
handler = provider.callback();
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

process.on('SIGTERM', () => process.exit(0));
