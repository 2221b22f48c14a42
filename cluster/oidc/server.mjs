// Stand-in for Keycloak in aegis-relay's tests (environment.md, "OIDC provider
// standing in for Keycloak"). Real Keycloak is a JVM that takes a minute to
// boot; the relay only needs what it sees of a realm: the discovery document,
// the JWKS and RS256 access tokens with Keycloak-shaped claims. This serves
// exactly that, under Keycloak's paths, on loopback.
//
//   node server.mjs [PORT]          (or env OIDC_PORT; default 0 = any free port)
//
// Issuer: http://127.0.0.1:PORT/realms/aegis-system (env OIDC_REALM changes
// the realm). Once listening it prints one line, `listening <issuer>`.
//
// Tokens come from the client-credentials grant of the preconfigured clients
// below (client_secret_basic, as `curl -u client:secret`):
//   curl -u enroller:enroller-secret -d grant_type=client_credentials \
//     http://127.0.0.1:PORT/realms/aegis-system/protocol/openid-connect/token
// Their header is {alg: RS256, typ: at+jwt, kid}; `aud` is the resource
// server's audience (Keycloak adds `aud` only through a mapper).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const port = Number.parseInt(process.argv[2] ?? process.env.OIDC_PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port ${JSON.stringify(process.argv[2] ?? process.env.OIDC_PORT)}`);
  process.exit(2);
}
const realm = process.env.OIDC_REALM ?? 'aegis-system';
const prefix = `/realms/${realm}`;

// The resource every client-credentials token is minted for, and the `aud`
// it carries: the relay's client, as the deployment guide's bootstrap maps
// it (the relay's default keycloak.audience).
const RESOURCE = 'urn:aegis:relay';
const AUDIENCE = 'relay-coordinator';

// Keycloak-shaped claims per client. Secrets are `<client_id>-secret`.
const CLIENT_CLAIMS = {
  enroller: { realm_access: { roles: ['aegis.edge.enroll'] }, tenant_id: 't-acme' },
  admin: { aegis_role: 'aegis:admin', tenant_id: 'aegis-system' },
  operator: { aegis_role: 'aegis:operator', tenant_id: 'aegis-system' },
  reader: { tenant_id: 't-acme' },
  svc: {
    preferred_username: 'service-account-svc',
    realm_access: { roles: ['aegis.edge.enroll'] },
    tenant_id: 't-acme',
  },
  'svc-manager': {
    preferred_username: 'service-account-svc-manager',
    realm_access: { roles: ['aegis.edge.enroll', 'aegis.edge.fleet.manage'] },
    tenant_id: 't-acme',
  },
  manager: { realm_access: { roles: ['aegis.edge.fleet.manage'] }, tenant_id: 't-acme' },
  notenant: { realm_access: { roles: ['aegis.edge.enroll'] } },
};

// A fresh signing key per run: nothing here is a secret worth keeping.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomUUID(),
  use: 'sig',
  alg: 'RS256',
};

const listener = http.createServer();
await new Promise((resolve, reject) => {
  listener.once('error', reject);
  listener.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${listener.address().port}${prefix}`;

const provider = new Provider(issuer, {
  clients: Object.keys(CLIENT_CLAIMS).map((clientId) => ({
    client_id: clientId,
    client_secret: `${clientId}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: '',
        audience: AUDIENCE,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: {
    ClientCredentials: 300,
  },
  routes: {
    authorization: '/protocol/openid-connect/auth',
    token: '/protocol/openid-connect/token',
    jwks: '/protocol/openid-connect/certs',
    userinfo: '/protocol/openid-connect/userinfo',
    introspection: '/protocol/openid-connect/token/introspect',
    revocation: '/protocol/openid-connect/revoke',
    end_session: '/protocol/openid-connect/logout',
  },
  extraTokenClaims: async (_ctx, token) => {
    const claims = CLIENT_CLAIMS[token.clientId];
    if (!claims) return undefined;
    return { azp: token.clientId, typ: 'Bearer', ...structuredClone(claims) };
  },
});

// Mount under /realms/<realm> the way a connect-style router would: strip the
// prefix from req.url and keep the full path in req.originalUrl, from which
// oidc-provider derives the mount path of the URLs it publishes.
const callback = provider.callback();
listener.on('request', (req, res) => {
  const url = req.url ?? '/';
  if (url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`)) {
    req.originalUrl = url;
    req.url = url.slice(prefix.length) || '/';
    callback(req, res);
    return;
  }
  res.statusCode = 404;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({
    error: 'not_found',
    error_description: `this stand-in serves only the realm at ${prefix}`,
  }));
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    listener.close();
    listener.closeAllConnections();
    process.exit(0);
  });
}

console.log(`listening ${issuer}`);
