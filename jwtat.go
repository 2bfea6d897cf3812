package main

// JWT access tokens (RFC 9068) for resources registered with -jwt, and the audience binding
// of every access token issued for a resource (RFC 8707).
//
// A JWT access token is signed ES256 with the current ES256 key of the JWKS (the ID tokens'
// key), header typ "at+jwt" (RFC 9068 §2.1), claims iss, sub, aud, client_id, scope, exp,
// iat, jti and, for a user's grant, auth_time (§2.2). It is stored like an opaque token
// (time followed by the SHA-256 of the whole JWT), so introspection, revocation and the
// grant's revocation see it; a resource server that verifies it locally sees a revocation
// only at its expiry, hence the short default lifetime. Refresh tokens stay opaque.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// defaultJWTTTL is the lifetime of a JWT access token when its resource names none.
const defaultJWTTTL = 10 * time.Minute

// maxResourceTTL bounds a resource's -token-ttl; retired signing keys stay published that
// long (keyCutoff), so that every JWT they signed still verifies until it expires.
const maxResourceTTL = 24 * time.Hour

// atKey is a parsed ES256 signing key with its encoded JWS header.
type atKey struct {
	kid    string
	signer crypto.Signer
	header string // base64url of {"alg":"ES256","kid":…,"typ":"at+jwt"}
}

// newATKey prepares key kid for signing access tokens.
func newATKey(kid string, signer crypto.Signer) *atKey {
	hdr, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"ES256", kid, "at+jwt"})
	return &atKey{kid: kid, signer: signer, header: b64.EncodeToString(hdr)}
}

// atClaims are the claims of one JWT access token (RFC 9068 §2.2).
type atClaims struct {
	Jti, Iss, Sub, Aud, ClientID, Scope string
	Iat, Exp, AuthTime                  int64 // AuthTime 0: no user (client_credentials)
}

// appendJSON writes the claims as a JSON object, by hand (the token endpoint's hot path):
// strings are quoted as encoding/json quotes them; an empty scope is left out.
func (c atClaims) appendJSON(b []byte) []byte {
	b = append(b, `{"jti":`...)
	b = appendJSONString(b, c.Jti)
	b = appendJSONField(b, "iss", c.Iss)
	b = appendJSONField(b, "sub", c.Sub)
	b = appendJSONField(b, "aud", c.Aud)
	b = appendJSONField(b, "client_id", c.ClientID)
	if c.Scope != "" {
		b = appendJSONField(b, "scope", c.Scope)
	}
	b = strconv.AppendInt(append(b, `,"iat":`...), c.Iat, 10)
	b = strconv.AppendInt(append(b, `,"exp":`...), c.Exp, 10)
	if c.AuthTime != 0 {
		b = strconv.AppendInt(append(b, `,"auth_time":`...), c.AuthTime, 10)
	}
	return append(b, '}')
}

// sign makes the compact JWS of claims (RFC 7515 §7.1, ES256: RFC 7518 §3.4).
func (k *atKey) sign(c atClaims) (string, error) {
	payload := c.appendJSON(make([]byte, 0, 384))
	buf := make([]byte, 0, len(k.header)+1+b64.EncodedLen(len(payload))+1+86)
	buf = append(append(buf, k.header...), '.')
	buf = b64.AppendEncode(buf, payload)
	h := sha256.Sum256(buf)
	ec, ok := k.signer.(*ecdsa.PrivateKey)
	if !ok {
		return "", errors.New("the access token key is not an ECDSA key")
	}
	// Deterministic ECDSA (RFC 6979, a nil random source): the nonce is derived from the key
	// and the message, so no random nonce can repeat, and it costs a third less CPU than the
	// hedged signature on the token endpoint's hot path (41 vs 59 µs here). Every token's
	// claims differ (jti), so no two tokens share a signature.
	der, err := ec.Sign(nil, h[:], crypto.SHA256)
	if err != nil {
		return "", err
	}
	var sig [64]byte // R || S, 32 bytes each (RFC 7518 §3.4), not ASN.1
	if err := derSignature(der, &sig); err != nil {
		return "", err
	}
	buf = b64.AppendEncode(append(buf, '.'), sig[:])
	return string(buf), nil
}

// derSignature turns an ASN.1 DER ECDSA signature, SEQUENCE { INTEGER r, INTEGER s }, into the
// fixed-size R || S of a P-256 JWS (RFC 7518 §3.4), each left-padded to 32 bytes.
func derSignature(der []byte, out *[64]byte) error {
	bad := errors.New("malformed ECDSA signature")
	if len(der) < 8 || der[0] != 0x30 || int(der[1]) != len(der)-2 || der[1] >= 0x80 {
		return bad
	}
	rest := der[2:]
	for i := range 2 {
		if len(rest) < 2 || rest[0] != 0x02 {
			return bad
		}
		n := int(rest[1])
		if n == 0 || n > 33 || len(rest) < 2+n {
			return bad
		}
		v := rest[2 : 2+n]
		if len(v) == 33 { // a leading zero keeps a high bit positive
			if v[0] != 0 {
				return bad
			}
			v = v[1:]
		}
		copy(out[i*32+32-len(v):(i+1)*32], v)
		rest = rest[2+n:]
	}
	if len(rest) != 0 {
		return bad
	}
	return nil
}

// jwtTokenKey is the storage key of a JWT access token: the issue time in its jti (a token
// value of ours, which begins with it) followed by the SHA-256 of the whole JWT. Anything
// else gets the bare hash, which matches nothing we stored. Only the exact token we signed
// has that hash, so an altered or forged JWT finds nothing even with a known jti.
func jwtTokenKey(tok string, h [32]byte) ([]byte, bool) {
	first := strings.IndexByte(tok, '.')
	last := strings.LastIndexByte(tok, '.')
	if first <= 0 || last <= first || len(tok) > 8<<10 {
		return nil, false
	}
	payload, err := b64.DecodeString(tok[first+1 : last])
	if err != nil {
		return nil, false
	}
	const marker = `{"jti":"`
	if !bytes.HasPrefix(payload, []byte(marker)) || len(payload) < len(marker)+tokenLen {
		return nil, false
	}
	var t [tokenTimeLen]byte
	if n, err := b64.Decode(t[:], payload[len(marker):len(marker)+8]); err != nil || n != tokenTimeLen {
		return nil, false
	}
	return append(t[:], h[:]...), true
}

// bindAccess makes the access token of a token response one for target (nil: no resource,
// nothing changes): the token row records the resource, the resource's -token-ttl sets the
// lifetime, and for a -jwt resource the opaque value is replaced by an RFC 9068 JWT. sub is
// the user's (userID 0: the client acting for itself, client_credentials).
func (s *server) bindAccess(ctx context.Context, resp *tokenResponse, pair *tokenPair, target *resource, c client, userID, authTime int64, now time.Time) error {
	if target == nil {
		return nil
	}
	pair.Access.Resource = target.ID
	ttl := target.TokenTTL
	if ttl == 0 && target.JWT {
		ttl = defaultJWTTTL
	}
	if ttl > 0 {
		pair.Access.ExpiresAt = now.Add(ttl).Unix()
		resp.ExpiresIn = int64(ttl / time.Second)
	}
	if !target.JWT {
		return nil
	}
	sub := c.ID
	if userID != 0 {
		var err error
		if sub, err = s.store.userSub(ctx, userID); err != nil {
			return err
		}
	} else {
		authTime = 0
	}
	key, err := s.store.cachedATKey(ctx)
	if err != nil {
		return err
	}
	jwt, err := key.sign(atClaims{Jti: resp.AccessToken, Iss: s.cfg.Issuer, Sub: sub, Aud: target.URI, ClientID: c.ID,
		Scope: pair.Access.Scope, Iat: now.Unix(), Exp: pair.Access.ExpiresAt, AuthTime: authTime})
	if err != nil {
		return err
	}
	// The opaque value made by newPair becomes the jti: random, time-ordered, never stored;
	// the key is what tokenKey makes of the JWT (jwtTokenKey), without decoding it again.
	h := sha256.Sum256([]byte(jwt))
	pair.Access.Hash = append(pair.Access.Hash[:tokenTimeLen:tokenTimeLen], h[:]...)
	resp.AccessToken = jwt
	return nil
}

// longestJWTTTL is the longest lifetime of a JWT access token any resource gets now; when
// the resources cannot be read, the longest one allowed (a key then stays published longer).
func (s *server) longestJWTTTL() time.Duration {
	rs, err := s.store.listResources(context.Background())
	if err != nil {
		return maxResourceTTL
	}
	var d time.Duration
	for _, r := range rs {
		if r.JWT {
			d = max(d, r.TokenTTL, defaultJWTTTL)
		}
	}
	return d
}
