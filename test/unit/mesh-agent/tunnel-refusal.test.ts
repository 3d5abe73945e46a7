import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { handshakeRefusal } from '../../../mesh-agent/tunnel/server.js';

const err = (code?: string) => Object.assign(new Error('refused'), code === undefined ? {} : { code });

describe('handshakeRefusal: why a tunnel handshake failed, as a closed set of reasons', () => {
  it('names a missing client certificate and an unknown server name', () => {
    assert.equal(handshakeRefusal(err('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE')), 'no-client-certificate');
    assert.equal(handshakeRefusal(err('SOCKMESH_E_UNKNOWN_SERVER_NAME')), 'unknown-server-name');
  });

  it("reads OpenSSL's verdict on the client certificate from the socket (Node reports a reset)", () => {
    const reset = err('ECONNRESET');
    assert.equal(handshakeRefusal(reset, { authorizationError: 'CERT_HAS_EXPIRED' }), 'expired');
    assert.equal(handshakeRefusal(reset, { authorizationError: 'CERT_NOT_YET_VALID' }), 'not-yet-valid');
    for (const code of [
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'SELF_SIGNED_CERT_IN_CHAIN',
    ])
      assert.equal(handshakeRefusal(reset, { authorizationError: code }), 'untrusted-issuer', code);
    assert.equal(handshakeRefusal(reset, { authorizationError: 'CERT_SIGNATURE_FAILURE' }), 'bad-signature');
    assert.equal(handshakeRefusal(reset, { authorizationError: 'SOMETHING_NEW' }), 'bad-certificate');
  });

  it('keeps protocol failures and anything else apart from certificate verdicts', () => {
    assert.equal(handshakeRefusal(err('ERR_SSL_UNSUPPORTED_PROTOCOL')), 'tls-version-or-alpn');
    assert.equal(handshakeRefusal(err('ECONNRESET')), 'handshake-failed');
    assert.equal(handshakeRefusal(err(), {}), 'handshake-failed');
  });
});
