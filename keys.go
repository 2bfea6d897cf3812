package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
)

// The ID token signing algorithms: RS256 is mandatory to implement (OIDC Core §15.1).
var signingAlgs = []string{"RS256", "ES256"}

// generateKey makes a new private key for alg: RSA 2048 or P-256.
func generateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "RS256":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown signing algorithm %q", alg)
}

// jwk is a public JSON Web Key (RFC 7517) as /oauth/jwks publishes it.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

var b64 = base64.RawURLEncoding

// publicJWK describes the public half of key, its kid the RFC 7638 thumbprint.
func publicJWK(key crypto.Signer, alg string) (jwk, error) {
	var k jwk
	var thumb string
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		k = jwk{Kty: "RSA", N: b64.EncodeToString(pub.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
		thumb = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, k.E, k.N)
	case *ecdsa.PublicKey:
		raw, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes for P-256
		if err != nil || len(raw) != 65 {
			return k, fmt.Errorf("unsupported EC key: %v", err)
		}
		k = jwk{Kty: "EC", Crv: "P-256", X: b64.EncodeToString(raw[1:33]), Y: b64.EncodeToString(raw[33:])}
		thumb = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`, k.X, k.Y)
	default:
		return k, fmt.Errorf("unsupported key type %T", pub)
	}
	sum := sha256.Sum256([]byte(thumb))
	k.Kid, k.Alg, k.Use = b64.EncodeToString(sum[:]), alg, "sig"
	return k, nil
}

// publicKey turns a published JWK back into a key that verifies signatures.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(k.N)
		e, err2 := b64.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			return nil, errors.New("malformed RSA JWK")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		x, err1 := b64.DecodeString(k.X)
		y, err2 := b64.DecodeString(k.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("malformed EC JWK")
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	}
	return nil, fmt.Errorf("unsupported JWK type %q", k.Kty)
}

// ---- storage

// storedKey is a row of the keys table.
type storedKey struct {
	JWK       jwk
	Private   []byte // PKCS #8; nil once retired
	CreatedAt int64
	RetiredAt int64 // 0 while current
}

// insertKey stores a new current key for its algorithm.
func (st *store) insertKey(ctx context.Context, tx *sql.Tx, key crypto.Signer, alg string, now int64) (jwk, error) {
	k, err := publicJWK(key, alg)
	if err != nil {
		return k, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return k, err
	}
	pub, _ := json.Marshal(k)
	_, err = st.txExec(ctx, tx, "INSERT INTO keys(kid, alg, private_key, public_jwk, created_at) VALUES(?, ?, ?, ?, ?)",
		k.Kid, alg, der, string(pub), now)
	return k, err
}

// ensureKeys creates a current key for every algorithm that has none (first start).
func (st *store) ensureKeys(ctx context.Context, gen func(string) (crypto.Signer, error), now int64) error {
	for _, alg := range signingAlgs {
		var n int
		if err := st.queryRow(ctx, "SELECT count(*) FROM keys WHERE alg = ? AND retired_at IS NULL", alg).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		key, err := gen(alg) // outside the write transaction: RSA generation takes a while
		if err != nil {
			return err
		}
		err = st.tx(ctx, func(tx *sql.Tx) error {
			// Another process may have created one meanwhile.
			if err := st.txRow(ctx, tx, "SELECT count(*) FROM keys WHERE alg = ? AND retired_at IS NULL", alg).Scan(&n); err != nil || n > 0 {
				return err
			}
			_, err := st.insertKey(ctx, tx, key, alg, now)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// rotateKeys makes a new current key for every algorithm; the old ones are retired (their
// private parts deleted) and stay published until the tokens they signed have expired.
func (st *store) rotateKeys(ctx context.Context, gen func(string) (crypto.Signer, error), now int64) ([]jwk, error) {
	keys := map[string]crypto.Signer{}
	for _, alg := range signingAlgs {
		k, err := gen(alg)
		if err != nil {
			return nil, err
		}
		keys[alg] = k
	}
	var out []jwk
	err := st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := st.txExec(ctx, tx, "UPDATE keys SET retired_at = ?, private_key = NULL WHERE retired_at IS NULL", now); err != nil {
			return err
		}
		for _, alg := range signingAlgs {
			k, err := st.insertKey(ctx, tx, keys[alg], alg, now)
			if err != nil {
				return err
			}
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// listKeys returns every stored key, newest first.
func (st *store) listKeys(ctx context.Context) ([]storedKey, error) {
	rows, err := st.query(ctx, "SELECT public_jwk, private_key, created_at, coalesce(retired_at, 0) FROM keys ORDER BY created_at DESC, kid")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedKey
	for rows.Next() {
		var k storedKey
		var pub string
		if err := rows.Scan(&pub, &k.Private, &k.CreatedAt, &k.RetiredAt); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(pub), &k.JWK); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// currentKey returns the kid and PKCS #8 bytes of the current key for alg.
func (st *store) currentKey(ctx context.Context, alg string) (kid string, der []byte, err error) {
	err = st.queryRow(ctx, "SELECT kid, private_key FROM keys WHERE alg = ? AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1", alg).Scan(&kid, &der)
	if errors.Is(err, sql.ErrNoRows) {
		err = fmt.Errorf("no current %s signing key", alg)
	}
	return kid, der, err
}

// deleteRetiredKeys removes retired keys retired before cutoff: nothing they signed is valid.
func (st *store) deleteRetiredKeys(ctx context.Context, cutoff int64) error {
	_, err := st.exec(ctx, "DELETE FROM keys WHERE retired_at IS NOT NULL AND retired_at < ?", cutoff)
	return err
}

// ---- the server's view of its keys

// keyring caches parsed private keys by kid; the database says which one is current, so a
// rotation by `oauthd keys rotate` in another process takes effect at once.
type keyring struct {
	mu      sync.Mutex
	signers map[string]crypto.Signer
}

// signer returns the current signing key for alg.
func (s *server) signer(ctx context.Context, alg string) (string, crypto.Signer, error) {
	kid, der, err := s.store.currentKey(ctx, alg)
	if err != nil {
		return "", nil, err
	}
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	if k, ok := s.keys.signers[kid]; ok {
		return kid, k, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return "", nil, fmt.Errorf("key %s: %w", kid, err)
	}
	k, ok := parsed.(crypto.Signer)
	if !ok {
		return "", nil, fmt.Errorf("key %s is not a signing key", kid)
	}
	if s.keys.signers == nil {
		s.keys.signers = map[string]crypto.Signer{}
	}
	s.keys.signers[kid] = k
	return kid, k, nil
}

// publishedKeys are the current keys and the retired ones whose tokens may still be valid.
func (s *server) publishedKeys(ctx context.Context) ([]jwk, error) {
	all, err := s.store.listKeys(ctx)
	if err != nil {
		return nil, err
	}
	cutoff := s.keyCutoff()
	var out []jwk
	for _, k := range all {
		if k.RetiredAt == 0 || k.RetiredAt >= cutoff {
			out = append(out, k.JWK)
		}
	}
	return out, nil
}

// keyCutoff is the retirement time before which a key can have signed nothing still valid:
// ID tokens live TokenTTL and JWT access tokens their resource's lifetime (jwtat.go), plus
// five minutes for clock skew at relying parties and resource servers.
func (s *server) keyCutoff() int64 {
	return s.now().Add(-max(s.cfg.TokenTTL, s.longestJWTTTL())).Unix() - 300
}

// handleJWKS publishes the public keys (RFC 7517 §5).
func (s *server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	keys, err := s.publishedKeys(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	b, _ := json.Marshal(map[string][]jwk{"keys": keys})
	w.Write(append(b, '\n'))
}

// ---- JWS compact serialization (RFC 7515) with RS256 and ES256 (RFC 7518 §3.3, §3.4)

// signJWT signs claims as a compact JWS with header alg, kid and typ JWT.
func signJWT(key crypto.Signer, alg, kid string, claims any) (string, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(body)
	h := sha256.Sum256([]byte(input))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg != "RS256" {
			return "", fmt.Errorf("RSA key used for %s", alg)
		}
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, h[:])
	case *ecdsa.PrivateKey:
		if alg != "ES256" {
			return "", fmt.Errorf("EC key used for %s", alg)
		}
		var r, s *big.Int
		if r, s, err = ecdsa.Sign(rand.Reader, k, h[:]); err == nil {
			sig = make([]byte, 64) // JWS wants R || S, 32 bytes each, not ASN.1
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	default:
		err = fmt.Errorf("unsupported key type %T", key)
	}
	if err != nil {
		return "", err
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// verifyJWT checks a compact JWS against the keys (by kid) and returns its claims. Only RS256
// and ES256 are accepted, so "none" and algorithm confusion are refused.
func verifyJWT(token string, keys []jwk) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 16<<10 {
		return nil, errors.New("not a compact JWS")
	}
	var hdr struct{ Alg, Kid string }
	raw, err := b64.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &hdr) != nil {
		return nil, errors.New("malformed JWS header")
	}
	var key jwk
	for _, k := range keys {
		if k.Kid == hdr.Kid {
			key = k
		}
	}
	if key.Kid == "" || key.Alg != hdr.Alg {
		return nil, errors.New("unknown signing key or algorithm")
	}
	pub, err := key.publicKey()
	if err != nil {
		return nil, err
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("malformed JWS signature")
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch p := pub.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(p, crypto.SHA256, h[:], sig)
	case *ecdsa.PublicKey:
		if len(sig) != 64 || !ecdsa.Verify(p, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			err = errors.New("bad ES256 signature")
		}
	}
	if err != nil {
		return nil, errors.New("the signature does not verify")
	}
	var claims map[string]any
	body, err := b64.DecodeString(parts[1])
	if err != nil || json.Unmarshal(body, &claims) != nil {
		return nil, errors.New("malformed JWS payload")
	}
	return claims, nil
}
