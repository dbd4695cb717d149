// A real OpenID provider for the tests (panva's oidc-provider, OpenID Certified), on 127.0.0.1.
//
//   node tests/oidc/provider.mjs <port> <keys.json> [--rotate]
//
// Signs RS256 JWT access tokens (RFC 9068) for the client-credentials grant: a game server's
// token, aud "telemetry", scopes from the request. Keys are kept in <keys.json> (generated on
// first start); --rotate puts a new key first (the one that signs) and keeps the old ones in
// the JWKS, as a provider does during a rotation. Prints "ready <issuer>" once it listens.
// TEST ONLY: the client secret below is a fixture, not a credential.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysPath, ...flags] = process.argv.slice(2);
if (!port || !keysPath) {
  console.error('usage: provider.mjs <port> <keys.json> [--rotate]');
  process.exit(2);
}

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `test-only-${randomUUID()}`, use: 'sig', alg: 'RS256' };
}

let keys = existsSync(keysPath) ? JSON.parse(readFileSync(keysPath, 'utf8')) : [];
if (keys.length === 0 || flags.includes('--rotate')) keys = [newKey(), ...keys];
writeFileSync(keysPath, JSON.stringify(keys));

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'test-only-game-server',
      client_secret: 'test-only-client-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    },
  ],
  jwks: { keys },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:telemetry',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'events:write events:read counts:read',
        audience: 'telemetry',
        accessTokenFormat: 'jwt',
        accessTokenTTL: 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});
const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
