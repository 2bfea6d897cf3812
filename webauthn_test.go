package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"html"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- a CBOR encoder for the software authenticator (the server only decodes)

// cborItem is a value the test encoder writes: int64, []byte, string, []any, bool,
// testMap (entries in order) or nil.
type testMap []cborEntry

func cborHead(major byte, n uint64) []byte {
	switch {
	case n < 24:
		return []byte{major<<5 | byte(n)}
	case n < 1<<8:
		return []byte{major<<5 | 24, byte(n)}
	case n < 1<<16:
		return binary.BigEndian.AppendUint16([]byte{major<<5 | 25}, uint16(n))
	case n < 1<<32:
		return binary.BigEndian.AppendUint32([]byte{major<<5 | 26}, uint32(n))
	}
	return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, n)
}

func cborEncode(v any) []byte {
	switch x := v.(type) {
	case int:
		return cborEncode(int64(x))
	case int64:
		if x >= 0 {
			return cborHead(0, uint64(x))
		}
		return cborHead(1, uint64(-1-x))
	case []byte:
		return append(cborHead(2, uint64(len(x))), x...)
	case string:
		return append(cborHead(3, uint64(len(x))), x...)
	case []any:
		b := cborHead(4, uint64(len(x)))
		for _, e := range x {
			b = append(b, cborEncode(e)...)
		}
		return b
	case testMap:
		b := cborHead(5, uint64(len(x)))
		for _, e := range x {
			b = append(append(b, cborEncode(e.Key)...), cborEncode(e.Value)...)
		}
		return b
	case bool:
		if x {
			return []byte{0xf5}
		}
		return []byte{0xf4}
	case nil:
		return []byte{0xf6}
	}
	panic("cborEncode: unsupported value")
}

// ---- the software authenticator

// testAuthenticator is a WebAuthn authenticator in software: a key pair (ES256, EdDSA or
// RS256), a credential ID, a signature counter and the flags it reports. It makes real
// attestationObject, clientDataJSON and assertion signatures.
type testAuthenticator struct {
	alg    int64
	key    crypto.Signer
	id     []byte
	count  uint32
	flags  byte   // reported flags besides AT/ED: UP, UV, BE, BS
	handle []byte // the user handle it stored at registration
}

var testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// newAuthenticator makes an authenticator for alg, reporting user presence and verification.
func newAuthenticator(t testing.TB, alg int64) *testAuthenticator {
	t.Helper()
	a := &testAuthenticator{alg: alg, id: newRandom(32), flags: flagUP | flagUV}
	var err error
	switch alg {
	case coseES256:
		a.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case coseEdDSA:
		_, a.key, err = ed25519.GenerateKey(rand.Reader)
	case coseRS256:
		a.key = testRSAKey()
	}
	if err != nil || a.key == nil {
		t.Fatalf("authenticator key for %d: %v", alg, err)
	}
	return a
}

// coseKey is the authenticator's public key as a COSE_Key.
func (a *testAuthenticator) coseKey() []byte {
	switch pub := a.key.Public().(type) {
	case *ecdsa.PublicKey:
		b, _ := pub.Bytes()
		return cborEncode(testMap{{int64(1), int64(2)}, {int64(3), int64(-7)}, {int64(-1), int64(1)}, {int64(-2), b[1:33]}, {int64(-3), b[33:]}})
	case ed25519.PublicKey:
		return cborEncode(testMap{{int64(1), int64(1)}, {int64(3), int64(-8)}, {int64(-1), int64(6)}, {int64(-2), []byte(pub)}})
	case *rsa.PublicKey:
		return cborEncode(testMap{{int64(1), int64(3)}, {int64(3), int64(-257)}, {int64(-1), pub.N.Bytes()}, {int64(-2), big.NewInt(int64(pub.E)).Bytes()}})
	}
	return nil
}

// waOpts bends a ceremony for the failure cases.
type waOpts struct {
	origin, rpID, typ string
	challenge         []byte // replaces the server's challenge
	flags             *byte  // replaces the reported flags
	count             *uint32
	badSig            bool
	crossOrigin       bool
	attObj            []byte // replaces the attestation object
	noHandle          bool
	handle            []byte        // replaces the user handle
	wait              time.Duration // between fetching the options and answering
}

func (a *testAuthenticator) clientData(typ, origin string, challenge []byte, cross bool) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": b64.EncodeToString(challenge), "origin": origin, "crossOrigin": cross})
	return b
}

func (a *testAuthenticator) authData(rpID string, flags byte, count uint32, attested []byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	b := append(h[:], flags)
	b = binary.BigEndian.AppendUint32(b, count)
	return append(b, attested...)
}

// register answers a creation request: clientDataJSON and an attestation object ("none").
func (a *testAuthenticator) register(rp relyingParty, challenge, userHandle []byte, o waOpts) (cdj, attObj []byte) {
	o.defaults(rp, "webauthn.create")
	if o.challenge != nil {
		challenge = o.challenge
	}
	a.handle = userHandle
	flags := a.flags
	if o.flags != nil {
		flags = *o.flags
	}
	att := append(make([]byte, 16), byte(len(a.id)>>8), byte(len(a.id)))
	att = append(append(att, a.id...), a.coseKey()...)
	ad := a.authData(o.rpID, flags|flagAT, a.count, att)
	attObj = cborEncode(testMap{{"fmt", "none"}, {"attStmt", testMap{}}, {"authData", ad}})
	if o.attObj != nil {
		attObj = o.attObj
	}
	return a.clientData(o.typ, o.origin, challenge, o.crossOrigin), attObj
}

func (o *waOpts) defaults(rp relyingParty, typ string) {
	if o.origin == "" {
		o.origin = rp.Origin
	}
	if o.rpID == "" {
		o.rpID = rp.ID
	}
	if o.typ == "" {
		o.typ = typ
	}
}

// assert answers a request: clientDataJSON, authenticator data and the signature over
// authenticatorData || SHA-256(clientDataJSON). The counter moves on.
func (a *testAuthenticator) assert(rp relyingParty, challenge []byte, o waOpts) (cdj, ad, sig []byte) {
	o.defaults(rp, "webauthn.get")
	if o.challenge != nil {
		challenge = o.challenge
	}
	a.count++
	count := a.count
	if o.count != nil {
		count = *o.count
	}
	flags := a.flags
	if o.flags != nil {
		flags = *o.flags
	}
	cdj = a.clientData(o.typ, o.origin, challenge, o.crossOrigin)
	ad = a.authData(o.rpID, flags, count, nil)
	h := sha256.Sum256(cdj)
	msg := append(append([]byte(nil), ad...), h[:]...)
	var err error
	switch k := a.key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, msg)
	default:
		d := sha256.Sum256(msg)
		sig, err = a.key.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		panic(err)
	}
	if o.badSig {
		sig[len(sig)/2] ^= 0x40
	}
	return cdj, ad, sig
}

// ---- driving the pages

// webauthnOptions fetches the options of purpose (with extra query parameters).
func (b *browser) webauthnOptions(purpose string, extra url.Values) (map[string]any, int) {
	b.t.Helper()
	q := url.Values{"for": {purpose}}
	for k, v := range extra {
		q[k] = v
	}
	p := b.get("/webauthn/options?" + q.Encode())
	var body struct {
		PublicKey map[string]any `json:"publicKey"`
	}
	json.Unmarshal([]byte(p.Body), &body)
	return body.PublicKey, p.StatusCode
}

// challengeOf decodes the challenge of options.
func challengeOf(t testing.TB, opts map[string]any) []byte {
	t.Helper()
	ch, err := b64.DecodeString(str(opts["challenge"]))
	if err != nil || len(ch) == 0 {
		t.Fatalf("options without a challenge: %v", opts)
	}
	return ch
}

// addPasskey registers a's credential through the security page, as webauthn.js does.
func (b *browser) addPasskey(a *testAuthenticator, name string, o waOpts) page {
	b.t.Helper()
	sec := b.get("/account/security")
	opts, status := b.webauthnOptions(purposeRegister, nil)
	if status != 200 {
		b.t.Fatalf("register options = %d", status)
	}
	user, _ := opts["user"].(map[string]any)
	handle, _ := b64.DecodeString(str(user["id"]))
	cdj, att := a.register(b.ts.s.mfa.rp, challengeOf(b.t, opts), handle, o)
	b.ts.clock.Advance(o.wait)
	return b.post("/account/security/passkeys", url.Values{"csrf_token": {hidden(sec.Body, "csrf_token")}, "name": {name},
		"client_data": {b64.EncodeToString(cdj)}, "attestation_object": {b64.EncodeToString(att)}, "next": {hidden(sec.Body, "next")}})
}

// assertionForm is a's answer to purpose's options as form fields.
func (b *browser) assertionForm(a *testAuthenticator, purpose string, extra url.Values, o waOpts) url.Values {
	b.t.Helper()
	opts, status := b.webauthnOptions(purpose, extra)
	if status != 200 {
		b.t.Fatalf("%s options = %d", purpose, status)
	}
	cdj, ad, sig := a.assert(b.ts.s.mfa.rp, challengeOf(b.t, opts), o)
	b.ts.clock.Advance(o.wait)
	handle := a.handle
	if o.handle != nil {
		handle = o.handle
	}
	if o.noHandle {
		handle = nil
	}
	return url.Values{"credential_id": {b64.EncodeToString(a.id)}, "client_data": {b64.EncodeToString(cdj)},
		"authenticator_data": {b64.EncodeToString(ad)}, "signature": {b64.EncodeToString(sig)}, "user_handle": {b64.EncodeToString(handle)}}
}

// passkeyLogin signs in usernameless with a, returning to next.
func (b *browser) passkeyLogin(a *testAuthenticator, next string, o waOpts) page {
	b.t.Helper()
	lp := b.get("/login?next=" + url.QueryEscape(next))
	f := b.assertionForm(a, purposeLogin, url.Values{"next": {next}}, o)
	f.Set("csrf_token", hidden(lp.Body, "csrf_token"))
	f.Set("next", next)
	return b.post("/login/passkey", f)
}

// passkeyTS is a test server whose issuer is a host name, so that passkeys work.
func passkeyTS(t testing.TB, edit ...func(*config)) *testServer {
	t.Helper()
	ts := newTestServer(t, edit...)
	// The listener is 127.0.0.1:PORT; browsers would need a name, and so does the RP ID.
	iss := strings.Replace(ts.url, "127.0.0.1", "localhost", 1)
	ts.s.cfg.Issuer = iss
	ts.s.mfa = newMFAState(ts.s.cfg, ts.s.csrfKey)
	if !ts.s.mfa.rpOK {
		t.Fatal("no relying party for " + iss)
	}
	ts.url = iss
	return ts
}

// signedIn reports whether the browser has a session now.
func (b *browser) signedIn() bool {
	b.t.Helper()
	p := b.get("/account")
	return p.StatusCode == http.StatusOK
}

// TestPasskeyRegisterAndSignIn: P-256, Ed25519 and RSA authenticators register on the
// security page and then sign in without a username; the passkey is listed with its name,
// dates and kind; the ID token says how.
func TestPasskeyRegisterAndSignIn(t *testing.T) {
	ts := passkeyTS(t)
	today := date(ts.clock.Now().Unix())[:10]
	for _, tt := range []struct {
		name   string
		alg    int64
		synced bool
		uv     bool
		amr    string
	}{
		{"phone", coseES256, true, true, "swk user mfa"},
		{"security key", coseEdDSA, false, false, "hwk user"},
		{"windows hello", coseRS256, false, true, "hwk user mfa"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthenticator(t, tt.alg)
			if tt.synced {
				a.flags |= flagBE | flagBS
			}
			if !tt.uv {
				a.flags &^= flagUV
			}
			name := strings.ReplaceAll(tt.name, " ", "-")
			ts.addUser(name, "correct horse battery")
			b := ts.browser(name, "correct horse battery")
			b.login()
			p := b.addPasskey(a, tt.name, waOpts{})
			if p.StatusCode != 200 || !strings.Contains(p.Body, "added") {
				t.Fatalf("addPasskey = %d %s", p.StatusCode, p.Body)
			}
			sec := b.get("/account/security")
			if !strings.Contains(sec.Body, `value="`+tt.name+`"`) || !strings.Contains(sec.Body, "Added "+today) {
				t.Errorf("security page does not list %q with its date: %s", tt.name, sec.Body)
			}
			ts.clock.Advance(time.Minute)
			nb := ts.browser("", "")
			p = nb.passkeyLogin(a, "/account", waOpts{})
			if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/account" {
				t.Fatalf("passkey sign-in = %d %s %s", p.StatusCode, p.Header.Get("Location"), p.Body)
			}
			sess, ok := ts.s.session(sessionRequest(t, nb))
			if !ok || sess.User.Username != name || sess.AMR != tt.amr {
				t.Errorf("session = %v %q %q; want %s with amr %q", ok, sess.User.Username, sess.AMR, name, tt.amr)
			}
			sec = nb.get("/account/security")
			if !strings.Contains(sec.Body, "last used "+today) {
				t.Errorf("last use not shown: %s", sec.Body)
			}
		})
	}
}

// sessionRequest is a request carrying the browser's cookies, for ts.s.session.
func sessionRequest(t testing.TB, b *browser) *http.Request {
	r, _ := http.NewRequest("GET", b.ts.url+"/", nil)
	u, _ := url.Parse(b.ts.url)
	for _, c := range b.c.Jar.Cookies(u) {
		r.AddCookie(c)
	}
	return r
}

// TestPasskeyFailures: every way a ceremony can be wrong is refused with its own reason,
// and none of them signs anyone in.
func TestPasskeyFailures(t *testing.T) {
	ts := passkeyTS(t, func(c *config) { c.MFA = mfaOptional })
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "battery staple horse")
	alice := newAuthenticator(t, coseES256)
	bob := newAuthenticator(t, coseEdDSA)
	ab := ts.browser("alice", "correct horse battery")
	ab.login()
	if p := ab.addPasskey(alice, "alice's", waOpts{}); p.StatusCode != 200 {
		t.Fatalf("register alice = %d %s", p.StatusCode, p.Body)
	}
	bb := ts.browser("bob", "battery staple horse")
	bb.login()
	if p := bb.addPasskey(bob, "bob's", waOpts{}); p.StatusCode != 200 {
		t.Fatalf("register bob = %d %s", p.StatusCode, p.Body)
	}
	// One sign-in first, so that the stored counter is above zero.
	if p := ts.browser("", "").passkeyLogin(alice, "/", waOpts{}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("first passkey sign-in = %d %s", p.StatusCode, p.Body)
	}
	noUP, noUV := byte(flagUV), byte(flagUP)
	zero := uint32(0)
	unknown := newAuthenticator(t, coseES256)
	unknown.handle = []byte("nobody")
	for _, tt := range []struct {
		name string
		a    *testAuthenticator
		o    waOpts
		want error
	}{
		{"wrong origin", alice, waOpts{origin: "https://evil.example"}, errWAOrigin},
		{"origin with another port", alice, waOpts{origin: "http://localhost:1"}, errWAOrigin},
		{"wrong RP ID hash", alice, waOpts{rpID: "evil.example"}, errWARPID},
		{"create instead of get", alice, waOpts{typ: "webauthn.create"}, errWAType},
		{"cross-origin iframe", alice, waOpts{crossOrigin: true}, errWACrossOrign},
		{"forged challenge", alice, waOpts{challenge: newRandom(56)}, errWAChallenge},
		{"expired challenge", alice, waOpts{wait: challengeTTL + time.Second}, errWAExpired},
		{"no user presence", alice, waOpts{flags: &noUP}, errWANoUP},
		{"bad signature", alice, waOpts{badSig: true}, errWASignature},
		{"counter regression", alice, waOpts{count: &zero}, errWACounter},
		{"unknown credential", unknown, waOpts{}, errWAUnknown},
		{"another user's handle", alice, waOpts{handle: []byte(userSub(t, ts, "bob"))}, errWAOtherUser},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := ts.browser("", "")
			p := b.passkeyLogin(tt.a, "/", tt.o)
			if p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, says(tt.want)) {
				t.Fatalf("passkey sign-in = %d; want 401 saying %q: %s", p.StatusCode, sentence(tt.want), p.Body)
			}
			if b.signedIn() {
				t.Fatal("signed in anyway")
			}
		})
	}
	// The counter regression is logged as a possible clone.
	if !strings.Contains(ts.logs.String(), "possible cloned authenticator") {
		t.Error("counter regression not logged as a possible clone")
	}

	t.Run("replayed challenge", func(t *testing.T) {
		b := ts.browser("", "")
		lp := b.get("/login")
		f := b.assertionForm(alice, purposeLogin, nil, waOpts{})
		f.Set("csrf_token", hidden(lp.Body, "csrf_token"))
		if p := b.post("/login/passkey", f); p.StatusCode != http.StatusSeeOther {
			t.Fatalf("first use = %d %s", p.StatusCode, p.Body)
		}
		// The very same answer again (from another browser would fail the binding; this one
		// holds the same challenge): the counter check or the used challenge refuses it.
		p := b.post("/login/passkey", f)
		if p.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replay = %d %s", p.StatusCode, p.Body)
		}
		// A fresh signature over the used challenge: only the used challenge refuses it.
		ch, _ := b64.DecodeString(str(mustJSON(t, f.Get("client_data"))["challenge"]))
		cdj, ad, sig := alice.assert(ts.s.mfa.rp, ch, waOpts{})
		f.Set("client_data", b64.EncodeToString(cdj))
		f.Set("authenticator_data", b64.EncodeToString(ad))
		f.Set("signature", b64.EncodeToString(sig))
		if p := b.post("/login/passkey", f); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, says(errWAReplayed)) {
			t.Fatalf("fresh signature over a used challenge = %d; want 401 %q: %s", p.StatusCode, sentence(errWAReplayed), p.Body)
		}
	})

	t.Run("challenge bound to another browser", func(t *testing.T) {
		b1, b2 := ts.browser("", ""), ts.browser("", "")
		f := b1.assertionForm(alice, purposeLogin, nil, waOpts{})
		lp := b2.get("/login")
		f.Set("csrf_token", hidden(lp.Body, "csrf_token"))
		if p := b2.post("/login/passkey", f); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, says(errWAChallenge)) {
			t.Fatalf("another browser's challenge = %d %s", p.StatusCode, p.Body)
		}
	})

	t.Run("user verification required", func(t *testing.T) {
		ts.s.cfg.MFA = mfaRequired
		defer func() { ts.s.cfg.MFA = mfaOptional }()
		b := ts.browser("", "")
		if opts, _ := b.webauthnOptions(purposeLogin, nil); opts["userVerification"] != "required" {
			t.Errorf("options userVerification = %v; want required", opts["userVerification"])
		}
		p := b.passkeyLogin(alice, "/", waOpts{flags: &noUV})
		if p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, says(errWANoUV)) {
			t.Fatalf("without UV = %d %s", p.StatusCode, p.Body)
		}
	})

	t.Run("another user's credential as a second factor", func(t *testing.T) {
		b := ts.browser("alice", "correct horse battery")
		p := b.login()
		if p.Header.Get("Location") != "/login/factor" {
			t.Fatalf("login = %d %s", p.StatusCode, p.Header.Get("Location"))
		}
		fp := b.get("/login/factor")
		f := b.assertionForm(bob, purposeFactor, nil, waOpts{})
		f.Set("csrf_token", hidden(fp.Body, "csrf_token"))
		f.Set("method", "passkey")
		if p := b.post("/login/factor", f); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, says(errWAOtherUser)) {
			t.Fatalf("bob's passkey for alice = %d %s", p.StatusCode, p.Body)
		}
		if b.signedIn() {
			t.Fatal("signed in with another user's passkey")
		}
	})

	t.Run("malformed", func(t *testing.T) {
		b := ts.browser("", "")
		lp := b.get("/login")
		f := b.assertionForm(alice, purposeLogin, nil, waOpts{})
		f.Set("csrf_token", hidden(lp.Body, "csrf_token"))
		for name, v := range map[string]string{"authenticator_data": "AAAA", "client_data": b64.EncodeToString([]byte("{not json")),
			"signature": "", "credential_id": "!!not base64!!"} {
			g := url.Values{}
			for k, vs := range f {
				g[k] = vs
			}
			g.Set(name, v)
			if p := b.post("/login/passkey", g); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, "malformed") && !strings.Contains(p.Body, "not registered") {
				t.Errorf("%s malformed = %d %s", name, p.StatusCode, p.Body)
			}
		}
	})
}

// says is how a page shows err: as a sentence, HTML-escaped.
func says(err error) string { return html.EscapeString(sentence(err)) }

// mustJSON decodes base64url JSON.
func mustJSON(t testing.TB, b64s string) map[string]any {
	raw, _ := b64.DecodeString(b64s)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// userSub is a user's sub.
func userSub(t testing.TB, ts *testServer, name string) string {
	u, err := ts.s.store.userByName(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.Sub
}

// TestPasskeyRegistrationFailures: registrations with the wrong origin, RP, type, a replayed
// or expired challenge, malformed CBOR or an unsupported key are refused; one already
// registered cannot be registered twice.
func TestPasskeyRegistrationFailures(t *testing.T) {
	ts := passkeyTS(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	badKey := cborEncode(testMap{{"fmt", "none"}, {"attStmt", testMap{}}, {"authData", func() []byte {
		h := sha256.Sum256([]byte(ts.s.mfa.rp.ID))
		ad := append(h[:], flagUP|flagAT, 0, 0, 0, 0)
		ad = append(append(ad, make([]byte, 16)...), 0, 4, 1, 2, 3, 4)
		return append(ad, cborEncode(testMap{{int64(1), int64(2)}, {int64(3), int64(-35)}})...) // ES384: not ours
	}()}})
	for _, tt := range []struct {
		name string
		o    waOpts
		want string
	}{
		{"wrong origin", waOpts{origin: "https://evil.example"}, says(errWAOrigin)},
		{"wrong RP ID hash", waOpts{rpID: "evil.example"}, says(errWARPID)},
		{"get instead of create", waOpts{typ: "webauthn.get"}, says(errWAType)},
		{"forged challenge", waOpts{challenge: newChallenge(ts.s.mfa.chKey, purposeRegister, nil, ts.clock.Now())}, says(errWAChallenge)},
		{"expired challenge", waOpts{wait: challengeTTL}, says(errWAExpired)},
		{"malformed CBOR", waOpts{attObj: []byte{0xa3, 0x63, 'f', 'm'}}, "malformed"},
		{"indefinite-length CBOR", waOpts{attObj: []byte{0xbf, 0xff}}, "malformed"},
		{"unsupported algorithm", waOpts{attObj: badKey}, "not accepted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := b.addPasskey(newAuthenticator(t, coseES256), "x", tt.o)
			if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, tt.want) {
				t.Fatalf("register = %d; want 400 saying %q: %s", p.StatusCode, tt.want, p.Body)
			}
		})
	}
	a := newAuthenticator(t, coseES256)
	if p := b.addPasskey(a, "first", waOpts{}); p.StatusCode != 200 {
		t.Fatalf("register = %d %s", p.StatusCode, p.Body)
	}
	if p := b.addPasskey(a, "again", waOpts{}); p.StatusCode != http.StatusConflict || !strings.Contains(p.Body, "already registered") {
		t.Fatalf("register again = %d %s", p.StatusCode, p.Body)
	}
	// A replayed registration: the same answer posted twice.
	a2 := newAuthenticator(t, coseEdDSA)
	sec := b.get("/account/security")
	opts, _ := b.webauthnOptions(purposeRegister, nil)
	cdj, att := a2.register(ts.s.mfa.rp, challengeOf(t, opts), nil, waOpts{})
	form := url.Values{"csrf_token": {hidden(sec.Body, "csrf_token")}, "client_data": {b64.EncodeToString(cdj)}, "attestation_object": {b64.EncodeToString(att)}}
	if p := b.post("/account/security/passkeys", form); p.StatusCode != 200 {
		t.Fatalf("register = %d %s", p.StatusCode, p.Body)
	}
	// The session was replaced by the registration; the new page has the new token.
	sec = b.get("/account/security")
	form.Set("csrf_token", hidden(sec.Body, "csrf_token"))
	if p := b.post("/account/security/passkeys", form); p.StatusCode == 200 {
		t.Fatalf("replayed registration accepted")
	}
}

// TestPasskeyIPIssuer: with an IP address for an issuer there are no passkeys: the page
// says so and offers TOTP, the options say why, and the login page offers no passkey.
func TestPasskeyIPIssuer(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	if lp := b.get("/login"); strings.Contains(lp.Body, "passkey") {
		t.Error("login page offers passkeys on an IP issuer")
	}
	b.login()
	sec := b.get("/account/security")
	if !strings.Contains(sec.Body, "Passkeys are unavailable") || !strings.Contains(sec.Body, "-issuer http://localhost:8080") ||
		!strings.Contains(sec.Body, "Set up an authenticator app") {
		t.Errorf("security page on an IP issuer: %s", sec.Body)
	}
	if _, status := b.webauthnOptions(purposeRegister, nil); status != http.StatusConflict {
		t.Errorf("options on an IP issuer = %d; want 409", status)
	}
}

// TestPasskeyManage: rename, and removal confirmed by the password or another passkey (not
// the one being removed); removing ends the user's other sessions.
func TestPasskeyManage(t *testing.T) {
	ts := passkeyTS(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	k1, k2 := newAuthenticator(t, coseES256), newAuthenticator(t, coseEdDSA)
	b.addPasskey(k1, "one", waOpts{})
	b.addPasskey(k2, "two", waOpts{})
	pks, _ := ts.s.store.passkeys(t.Context(), ts.addUserID(t, "alice"))
	if len(pks) != 2 {
		t.Fatalf("%d passkeys", len(pks))
	}
	other := ts.browser("alice", "correct horse battery")
	if p := other.passkeyLogin(k2, "/", waOpts{}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("other browser = %d", p.StatusCode)
	}
	sec := b.get("/account/security")
	csrf := hidden(sec.Body, "csrf_token")
	id := func(p passkey) string { return strconv.FormatInt(p.ID, 10) }
	if p := b.post("/account/security/passkeys/"+id(pks[0])+"/rename", url.Values{"csrf_token": {csrf}, "name": {"  laptop  "}}); p.StatusCode != 200 ||
		!strings.Contains(p.Body, `value="laptop"`) {
		t.Fatalf("rename = %d %s", p.StatusCode, p.Body)
	}
	if p := b.post("/account/security/passkeys/"+id(pks[0])+"/rename", url.Values{"csrf_token": {csrf}, "name": {"a\nb"}}); p.StatusCode != 400 {
		t.Errorf("rename to two lines = %d", p.StatusCode)
	}
	del := "/account/security/passkeys/" + id(pks[0]) + "/delete"
	cp := b.get(del)
	if cp.StatusCode != 200 || !strings.Contains(cp.Body, "Remove the passkey “laptop”?") {
		t.Fatalf("confirm page = %d %s", cp.StatusCode, cp.Body)
	}
	csrf = hidden(cp.Body, "csrf_token")
	for _, tt := range []struct {
		name string
		form url.Values
		want int
	}{
		{"nothing", url.Values{}, 400},
		{"wrong password", url.Values{"password": {"wrong password"}}, 401},
		{"the passkey being removed", b.assertionForm(k1, purposeConfirm, url.Values{"exclude": {id(pks[0])}}, waOpts{}), 401},
	} {
		tt.form.Set("csrf_token", csrf)
		if p := b.post(del, tt.form); p.StatusCode != tt.want {
			t.Errorf("remove with %s = %d; want %d: %s", tt.name, p.StatusCode, tt.want, p.Body)
		}
	}
	f := b.assertionForm(k2, purposeConfirm, url.Values{"exclude": {id(pks[0])}}, waOpts{})
	f.Set("csrf_token", csrf)
	if p := b.post(del, f); p.StatusCode != 200 || !strings.Contains(p.Body, "Passkey removed") {
		t.Fatalf("remove confirmed by the other passkey = %d %s", p.StatusCode, p.Body)
	}
	if other.signedIn() {
		t.Error("removing a passkey left the user's other session signed in")
	}
	if !b.signedIn() {
		t.Error("removing a passkey signed out the session that did it")
	}
	// The last one, confirmed with the password.
	del = "/account/security/passkeys/" + id(pks[1]) + "/delete"
	cp = b.get(del)
	if p := b.post(del, url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}, "password": {"correct horse battery"}}); p.StatusCode != 200 {
		t.Fatalf("remove confirmed by the password = %d %s", p.StatusCode, p.Body)
	}
	f2, _ := ts.s.store.userFactors(t.Context(), pks[0].UserID)
	if f2.any() || f2.RecoveryLeft != 0 {
		t.Errorf("after removing every factor: %+v (recovery codes must go with the last factor)", f2)
	}
}

// addUserID is the id of an existing user.
func (ts *testServer) addUserID(t testing.TB, name string) int64 {
	u, err := ts.s.store.userByName(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// TestVerifyAssertionUnit checks the ceremony functions directly, for each algorithm.
func TestVerifyAssertionUnit(t *testing.T) {
	rp, _ := relyingPartyFor("https://auth.example")
	key := newRandom(32)
	now := time.Unix(1_800_000_000, 0)
	for _, alg := range []int64{coseES256, coseEdDSA, coseRS256} {
		a := newAuthenticator(t, alg)
		c := ceremony{rp: rp, key: key, purpose: purposeRegister, binding: []byte("s"), now: now}
		cdj, att := a.register(rp, newChallenge(key, purposeRegister, []byte("s"), now), nil, waOpts{})
		cred, err := verifyRegistration(c, cdj, att)
		if err != nil {
			t.Fatalf("alg %d: verifyRegistration: %v", alg, err)
		}
		if cred.Alg != alg || string(cred.ID) != string(a.id) {
			t.Errorf("alg %d: credential %+v", alg, cred)
		}
		c.purpose = purposeLogin
		cdj, ad, sig := a.assert(rp, newChallenge(key, purposeLogin, []byte("s"), now), waOpts{})
		as, err := verifyAssertion(c, cred.PublicKey, 0, cdj, ad, sig)
		if err != nil || as.SignCount != 1 {
			t.Fatalf("alg %d: verifyAssertion = %+v, %v", alg, as, err)
		}
		// The purpose is bound: a login challenge does not register.
		c.purpose = purposeRegister
		if _, err := verifyAssertion(c, cred.PublicKey, 0, cdj, ad, sig); !errors.Is(err, errWAChallenge) {
			t.Errorf("alg %d: challenge of another purpose: %v", alg, err)
		}
		c.purpose, c.requireUV = purposeLogin, true
		a.flags = flagUP
		cdj, ad, sig = a.assert(rp, newChallenge(key, purposeLogin, []byte("s"), now), waOpts{})
		if _, err := verifyAssertion(c, cred.PublicKey, 1, cdj, ad, sig); !errors.Is(err, errWANoUV) {
			t.Errorf("alg %d: UV missing when required: %v", alg, err)
		}
	}
	// Both counters zero (authenticators that do not count) pass.
	a := newAuthenticator(t, coseES256)
	zero := uint32(0)
	c := ceremony{rp: rp, key: key, purpose: purposeLogin, now: now}
	cdj, ad, sig := a.assert(rp, newChallenge(key, purposeLogin, nil, now), waOpts{count: &zero})
	if _, err := verifyAssertion(c, a.coseKey(), 0, cdj, ad, sig); err != nil {
		t.Errorf("zero counters: %v", err)
	}
}

// TestCBOR decodes what WebAuthn sends and refuses what it must not accept.
func TestCBOR(t *testing.T) {
	v, err := decodeCBORAll(cborEncode(testMap{{"fmt", "none"}, {int64(-3), []byte{1, 2}}, {"a", []any{int64(1), int64(-1000), true, nil, "x"}}}))
	if err != nil {
		t.Fatal(err)
	}
	m := v.(cborMap)
	if f, _ := m.get("fmt"); f != "none" {
		t.Errorf("fmt = %v", f)
	}
	if b, _ := m.get(-3); string(b.([]byte)) != "\x01\x02" {
		t.Errorf("-3 = %v", b)
	}
	deep := []byte{}
	for range cborMaxDepth + 2 {
		deep = append(deep, 0x81) // array of one
	}
	deep = append(deep, 0x01)
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated uint", []byte{0x19, 0x01}},
		{"indefinite map", []byte{0xbf, 0xff}},
		{"indefinite bytes", []byte{0x5f, 0x41, 0x00, 0xff}},
		{"tag", []byte{0xc0, 0x60}},
		{"float", []byte{0xf9, 0x3c, 0x00}},
		{"huge string length", []byte{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"huge array length", []byte{0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"huge map length", []byte{0xba, 0xff, 0xff, 0xff, 0xff}},
		{"too deep", deep},
		{"repeated key", cborEncode(testMap{{"a", int64(1)}, {"a", int64(2)}})},
		{"array key", []byte{0xa1, 0x80, 0x01}},
		{"invalid UTF-8", []byte{0x62, 0xff, 0xfe}},
		{"reserved info", []byte{0x1c}},
		{"trailing bytes", []byte{0x01, 0x02}},
		{"uint64 over int64", []byte{0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		if _, err := decodeCBORAll(tt.in); !errors.Is(err, errCBOR) {
			t.Errorf("%s: err = %v; want errCBOR", tt.name, err)
		}
	}
}

// TestCOSEKeys refuses keys off the curve, small RSA keys and unknown algorithms.
func TestCOSEKeys(t *testing.T) {
	for _, alg := range []int64{coseES256, coseEdDSA, coseRS256} {
		if _, err := parseCOSEKey(newAuthenticator(t, alg).coseKey()); err != nil {
			t.Errorf("alg %d: %v", alg, err)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, tt := range []struct {
		name string
		key  testMap
	}{
		{"not on the curve", testMap{{int64(1), int64(2)}, {int64(3), int64(-7)}, {int64(-1), int64(1)}, {int64(-2), make([]byte, 32)}, {int64(-3), make([]byte, 32)}}},
		{"short x", testMap{{int64(1), int64(2)}, {int64(3), int64(-7)}, {int64(-1), int64(1)}, {int64(-2), make([]byte, 31)}, {int64(-3), make([]byte, 32)}}},
		{"P-384", testMap{{int64(1), int64(2)}, {int64(3), int64(-7)}, {int64(-1), int64(2)}, {int64(-2), make([]byte, 32)}, {int64(-3), make([]byte, 32)}}},
		{"RSA 1024", testMap{{int64(1), int64(3)}, {int64(3), int64(-257)}, {int64(-1), small.N.Bytes()}, {int64(-2), []byte{1, 0, 1}}}},
		{"even exponent", testMap{{int64(1), int64(3)}, {int64(3), int64(-257)}, {int64(-1), testRSAKey().N.Bytes()}, {int64(-2), []byte{2}}}},
		{"EdDSA on EC2", testMap{{int64(1), int64(2)}, {int64(3), int64(-8)}, {int64(-1), int64(6)}, {int64(-2), make([]byte, 32)}}},
		{"no alg", testMap{{int64(1), int64(1)}}},
		{"not a map", nil},
	} {
		b := cborEncode(tt.key)
		if tt.key == nil {
			b = cborEncode([]any{int64(1)})
		}
		if _, err := parseCOSEKey(b); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
