package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// verifyAccessJWT is what a resource server does with an RFC 9068 access token, written
// against the published JWKS with the standard library alone (none of oauthd's JOSE code):
// §4: typ at+jwt, a signature by a key of the JWKS (ES256 here), iss, aud, exp.
func verifyAccessJWT(jwks []byte, tok, iss, aud string, now time.Time) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWS")
	}
	dec := base64.RawURLEncoding
	var hdr struct{ Alg, Kid, Typ string }
	if raw, err := dec.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &hdr) != nil {
		return nil, errors.New("bad header")
	}
	if t := strings.ToLower(hdr.Typ); t != "at+jwt" && t != "application/at+jwt" {
		return nil, fmt.Errorf("typ %q is not at+jwt", hdr.Typ)
	}
	if hdr.Alg != "ES256" {
		return nil, fmt.Errorf("alg %q", hdr.Alg)
	}
	var set struct {
		Keys []struct{ Kty, Kid, Alg, Crv, X, Y string }
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, err
	}
	var pub *ecdsa.PublicKey
	for _, k := range set.Keys {
		if k.Kid == hdr.Kid && k.Kty == "EC" && k.Crv == "P-256" {
			x, _ := dec.DecodeString(k.X)
			y, _ := dec.DecodeString(k.Y)
			var err error
			if pub, err = ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...)); err != nil {
				return nil, err
			}
		}
	}
	if pub == nil {
		return nil, fmt.Errorf("kid %q is not in the JWKS", hdr.Kid)
	}
	sig, err := dec.DecodeString(parts[2])
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || len(sig) != 64 || !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, errors.New("the signature does not verify")
	}
	var claims map[string]any
	if raw, err := dec.DecodeString(parts[1]); err != nil || json.Unmarshal(raw, &claims) != nil {
		return nil, errors.New("bad payload")
	}
	for _, c := range []string{"iss", "exp", "aud", "sub", "client_id", "iat", "jti"} {
		if claims[c] == nil {
			return nil, fmt.Errorf("claim %s missing", c)
		}
	}
	if claims["iss"] != iss {
		return nil, fmt.Errorf("iss %v", claims["iss"])
	}
	if claims["aud"] != aud {
		return nil, fmt.Errorf("aud %v is not %s", claims["aud"], aud)
	}
	if exp, _ := claims["exp"].(float64); int64(exp) <= now.Unix() {
		return nil, errors.New("expired")
	}
	return claims, nil
}

// jwks fetches the published keys.
func (ts *testServer) jwks() []byte {
	ts.t.Helper()
	resp, err := http.Get(ts.url + "/oauth/jwks")
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// TestJWTAccessTokens: a -jwt resource gets RFC 9068 access tokens that an independent
// verifier accepts for that audience only; they stay introspectable and revocable, refresh
// tokens stay opaque, the resource's lifetime applies.
func TestJWTAccessTokens(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	files := ts.addResource("https://files.example.com/mcp", "Files MCP", "files:read", true, 0)
	notes := ts.addResource("https://notes.example.com/mcp", "Notes MCP", "", true, 2*time.Minute)
	b := ts.browser("alice", "correct horse battery")
	b.login()
	loginTime := ts.clock.Now().Unix()
	ts.clock.Advance(time.Second)

	r := b.codeWith(c, []string{files.URI}, "openid offline_access read files:read", nil)
	at, rt := str(r.JSON["access_token"]), str(r.JSON["refresh_token"])
	if r.Status != 200 || strings.Count(at, ".") != 2 || r.JSON["expires_in"] != float64(600) {
		t.Fatalf("exchange = %d %s; want a JWT access token for 600 s", r.Status, r.Raw)
	}
	if len(rt) != tokenLen || strings.Contains(rt, ".") {
		t.Errorf("refresh token %q is not opaque", rt)
	}
	jwks := ts.jwks()
	claims, err := verifyAccessJWT(jwks, at, ts.url, files.URI, ts.clock.Now())
	if err != nil {
		t.Fatalf("the access token does not verify: %v", err)
	}
	want := map[string]any{"sub": alice.Sub, "client_id": c.ID, "scope": "files:read offline_access openid read", "auth_time": float64(loginTime),
		"iat": float64(ts.clock.Now().Unix()), "exp": float64(ts.clock.Now().Add(10 * time.Minute).Unix())}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v; want %v", k, claims[k], v)
		}
	}
	if jti := str(claims["jti"]); len(jti) != tokenLen {
		t.Errorf("jti %q is not a fresh random token value", jti)
	}
	// A verifier expecting another audience, or given a token of another type (the ID token,
	// signed by the same keys), refuses it.
	if _, err := verifyAccessJWT(jwks, at, ts.url, notes.URI, ts.clock.Now()); err == nil || !strings.Contains(err.Error(), "aud") {
		t.Errorf("verified for the wrong audience: %v", err)
	}
	if _, err := verifyAccessJWT(jwks, str(r.JSON["id_token"]), ts.url, c.ID, ts.clock.Now()); err == nil || !strings.Contains(err.Error(), "typ") {
		t.Errorf("the ID token passed as an access token: %v", err)
	}
	// Introspection knows it: the resource's own credential sees it, with aud.
	if in := ts.introspect(files.cred(), at); in.JSON["active"] != true || in.JSON["aud"] != files.URI || in.JSON["sub"] != alice.Sub {
		t.Errorf("introspection of the JWT = %s", in.Raw)
	}
	if in := ts.introspect(notes.cred(), at); in.JSON["active"] != false {
		t.Errorf("another resource's credential sees the JWT: %s", in.Raw)
	}
	// A JWT altered after signing (same jti, other scope) matches nothing.
	parts := strings.Split(at, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "files:read", "files:xxxx", 1))) + "." + parts[2]
	if in := ts.introspect(files.cred(), forged); in.JSON["active"] != false {
		t.Errorf("a forged JWT with a real jti is active: %s", in.Raw)
	}

	// Refreshing gives a new JWT for the same resource.
	r2 := ts.refresh(c, rt)
	if r2.Status != 200 || str(r2.JSON["access_token"]) == at {
		t.Fatalf("refresh = %d %s", r2.Status, r2.Raw)
	}
	if _, err := verifyAccessJWT(jwks, str(r2.JSON["access_token"]), ts.url, files.URI, ts.clock.Now()); err != nil {
		t.Errorf("the refreshed access token does not verify: %v", err)
	}
	// Revocation: introspection sees it at once; a locally verifying server only at expiry.
	if rv := ts.postToken("/oauth/revoke", url.Values{"token": {str(r2.JSON["access_token"])}}, c.ID, c.Secret); rv.Status != 200 {
		t.Fatalf("revoke = %d %s", rv.Status, rv.Raw)
	}
	if in := ts.introspect(files.cred(), str(r2.JSON["access_token"])); in.JSON["active"] != false {
		t.Errorf("a revoked JWT is active in introspection: %s", in.Raw)
	}
	if _, err := verifyAccessJWT(jwks, str(r2.JSON["access_token"]), ts.url, files.URI, ts.clock.Now()); err != nil {
		t.Errorf("a revoked JWT should still verify locally until it expires: %v", err)
	}
	ts.clock.Advance(10 * time.Minute)
	if in := ts.introspect(files.cred(), at); in.JSON["active"] != false {
		t.Errorf("an expired JWT is active: %s", in.Raw)
	}

	// client_credentials: sub is the client, no auth_time; the resource's -token-ttl.
	svc := ts.addServiceClient("jobs")
	cc := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}, "resource": {notes.URI}}, svc.ID, svc.Secret)
	if cc.Status != 200 || cc.JSON["expires_in"] != float64(120) {
		t.Fatalf("client_credentials = %d %s", cc.Status, cc.Raw)
	}
	claims, err = verifyAccessJWT(jwks, str(cc.JSON["access_token"]), ts.url, notes.URI, ts.clock.Now())
	if err != nil || claims["sub"] != svc.ID || claims["client_id"] != svc.ID || claims["auth_time"] != nil || claims["scope"] != "jobs" ||
		claims["exp"].(float64)-claims["iat"].(float64) != 120 {
		t.Errorf("client_credentials JWT claims = %v, %v", claims, err)
	}
	if in := ts.introspect(notes.cred(), str(cc.JSON["access_token"])); in.JSON["active"] != true || in.JSON["sub"] != svc.ID {
		t.Errorf("introspection of the client_credentials JWT = %s", in.Raw)
	}

	// After a key rotation new tokens use the new key, and the old one stays published while
	// its tokens live.
	if _, err := ts.s.store.rotateKeys(context.Background(), generateKey, ts.clock.Now().Unix()); err != nil {
		t.Fatal(err)
	}
	cc2 := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}, "resource": {notes.URI}}, svc.ID, svc.Secret)
	if kid := func(tok string) string {
		raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		var h struct{ Kid string }
		json.Unmarshal(raw, &h)
		return h.Kid
	}; kid(str(cc2.JSON["access_token"])) == kid(str(cc.JSON["access_token"])) {
		t.Error("a JWT signed after the rotation uses the old key")
	}
	jwks = ts.jwks()
	for _, tok := range []string{str(cc.JSON["access_token"]), str(cc2.JSON["access_token"])} {
		if _, err := verifyAccessJWT(jwks, tok, ts.url, notes.URI, ts.clock.Now()); err != nil {
			t.Errorf("after the rotation a JWT does not verify: %v", err)
		}
	}
}

// TestJWTTokenKey: a JWT's storage key leads with its jti's time; anything else is the bare hash.
func TestJWTTokenKey(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := newATKey("kid", mustKey(t))
	jwt, err := k.sign(atClaims{Jti: newTokenValue(now), Iss: "https://a", Sub: "s", Aud: "https://r", ClientID: "c", Scope: "x", Iat: now.Unix(), Exp: now.Unix() + 60})
	if err != nil {
		t.Fatal(err)
	}
	key := tokenKey(jwt)
	h := sha256.Sum256([]byte(jwt))
	if len(key) != tokenTimeLen+32 || string(key[tokenTimeLen:]) != string(h[:]) || string(key[:tokenTimeLen]) != string(tokenKey(newTokenValue(now))[:tokenTimeLen]) {
		t.Errorf("tokenKey(JWT) = %x; want its jti's time and its hash", key)
	}
	for _, other := range []string{"a.b.c", "x.eyJqdGkiOiJzaG9ydCJ9.y", strings.Repeat("a", 43), "..", "a.."} {
		h := sha256.Sum256([]byte(other))
		if got := tokenKey(other); string(got) != string(h[:]) {
			t.Errorf("tokenKey(%q) = %x; want the bare hash", other, got)
		}
	}
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[1])
	if err := json.Unmarshal(raw, &claims); err != nil || claims["aud"] != "https://r" || claims["auth_time"] != nil {
		t.Errorf("claims = %s (%v)", raw, err)
	}
	// Claims with characters JSON must escape come out as the same strings.
	odd := atClaims{Jti: newTokenValue(now), Iss: "https://a/\"x\"", Sub: "Zoë\u2028<&>\x01", Aud: "https://r", ClientID: "c\n", Scope: "a\\b", Iat: 1, Exp: 2, AuthTime: 3}
	var back map[string]any
	if err := json.Unmarshal(odd.appendJSON(nil), &back); err != nil || back["iss"] != odd.Iss || back["sub"] != odd.Sub || back["client_id"] != odd.ClientID ||
		back["scope"] != odd.Scope || back["auth_time"] != float64(3) {
		t.Errorf("appendJSON(%+v) = %s (%v)", odd, odd.appendJSON(nil), err)
	}
	if b := (atClaims{Jti: "j"}).appendJSON(nil); strings.Contains(string(b), "scope") {
		t.Errorf("an empty scope is written: %s", b)
	}
}

// mustKey is the cached ES256 test key.
func mustKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := cachedKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// TestDERSignature: derSignature gives the R || S that encoding/asn1 reads from the same DER
// for many signatures (short R and S among them), which then verify; malformed DER is an
// error.
func TestDERSignature(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	short := 0
	for i := range 2000 {
		h := sha256.Sum256([]byte(strconv.Itoa(i)))
		der, err := key.Sign(nil, h[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		var want struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &want); err != nil {
			t.Fatal(err)
		}
		var sig [64]byte
		if err := derSignature(der, &sig); err != nil {
			t.Fatalf("derSignature(%x) = %v", der, err)
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if r.Cmp(want.R) != 0 || s.Cmp(want.S) != 0 || !ecdsa.Verify(&key.PublicKey, h[:], r, s) {
			t.Fatalf("derSignature(%x) = %x", der, sig)
		}
		if want.R.BitLen() <= 248 || want.S.BitLen() <= 248 {
			short++
		}
	}
	if short == 0 {
		t.Log("no short R or S among the signatures")
	}
	for _, bad := range []string{"", "30", "3007020101020101", "300602010102010100", "310602010102010101",
		"3006030101020101", "30060201010201", "302502210101" + strings.Repeat("00", 32) + "020101", "3081060201010201"} {
		b, _ := hex.DecodeString(bad)
		var sig [64]byte
		if err := derSignature(b, &sig); err == nil {
			t.Errorf("derSignature(%s) accepted it", bad)
		}
	}
}

// FuzzDERSignature: any bytes give a signature or an error, never a panic.
func FuzzDERSignature(f *testing.F) {
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, der []byte) {
		var sig [64]byte
		_ = derSignature(der, &sig)
	})
}
