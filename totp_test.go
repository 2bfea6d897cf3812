package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rfcSecret is the SHA-1 seed of RFC 4226 Appendix D and RFC 6238 Appendix B.
var rfcSecret = []byte("12345678901234567890")

// TestHOTPVectors is RFC 4226 Appendix D.
func TestHOTPVectors(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for i, w := range want {
		if got := hotp(rfcSecret, uint64(i), 6); got != w {
			t.Errorf("hotp(counter %d) = %s; want %s", i, got, w)
		}
	}
}

// TestTOTPVectors is RFC 6238 Appendix B (SHA-1, 8 digits, 30 s steps), through the
// injectable clock of the step computation; production uses the same core with 6 digits.
func TestTOTPVectors(t *testing.T) {
	for _, tt := range []struct {
		unix int64
		want string
	}{
		{59, "94287082"}, {1111111109, "07081804"}, {1111111111, "14050471"},
		{1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"},
	} {
		now := time.Unix(tt.unix, 0)
		if got := totpAt(rfcSecret, totpStep(now), 8); got != tt.want {
			t.Errorf("TOTP at %d = %s; want %s", tt.unix, got, tt.want)
		}
		// The 6-digit code is the same truncation, mod 10^6.
		six := tt.want[2:]
		if step, ok := matchTOTP(rfcSecret, six, now, 0); !ok || step != totpStep(now) {
			t.Errorf("matchTOTP(%s at %d) = %d, %v", six, tt.unix, step, ok)
		}
	}
}

// TestMatchTOTP: one step of skew either way, not two; spaces are fine; a used step and
// earlier ones are refused; only 6 digits.
func TestMatchTOTP(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	cur := totpStep(now)
	code := func(step int64) string { return totpAt(rfcSecret, step, 6) }
	for _, tt := range []struct {
		name string
		code string
		last int64
		ok   bool
	}{
		{"current", code(cur), 0, true},
		{"previous step", code(cur - 1), 0, true},
		{"next step", code(cur + 1), 0, true},
		{"two steps old", code(cur - 2), 0, false},
		{"two steps ahead", code(cur + 2), 0, false},
		{"with spaces", code(cur)[:3] + " " + code(cur)[3:], 0, true},
		{"already used", code(cur), cur, false},
		{"older than the last used", code(cur - 1), cur, false},
		{"seven digits", code(cur) + "1", 0, false},
		{"letters", "abcdef", 0, false},
		{"empty", "", 0, false},
	} {
		if _, ok := matchTOTP(rfcSecret, tt.code, now, tt.last); ok != tt.ok {
			t.Errorf("%s: matchTOTP(%q) = %v; want %v", tt.name, tt.code, ok, tt.ok)
		}
	}
}

// TestOTPAuthURI is the Key URI Format with base32 without padding.
func TestOTPAuthURI(t *testing.T) {
	got := otpauthURI("auth.example.com", "alice@home", rfcSecret)
	want := "otpauth://totp/auth.example.com:alice@home?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=auth.example.com"
	if got != want {
		t.Errorf("otpauthURI = %s\nwant %s", got, want)
	}
	if g := groupSecret(rfcSecret); g != "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ" {
		t.Errorf("groupSecret = %q", g)
	}
}

// TestRecoveryCodeFormat: 20 base32 characters in four groups, typed back in any case.
func TestRecoveryCodeFormat(t *testing.T) {
	re := regexp.MustCompile(`^[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}-[a-z2-7]{5}$`)
	seen := map[string]bool{}
	for range 100 {
		c := newRecoveryCode()
		if !re.MatchString(c) || seen[c] {
			t.Fatalf("recovery code %q", c)
		}
		seen[c] = true
		if n := normalizeRecoveryCode(" " + strings.ToUpper(strings.ReplaceAll(c, "-", " ")) + " "); n != strings.ReplaceAll(c, "-", "") {
			t.Errorf("normalize(%q) = %q", c, n)
		}
	}
	for _, bad := range []string{"", "abc", "aaaaa-aaaaa-aaaaa-aaaa1", strings.Repeat("a", 21)} {
		if normalizeRecoveryCode(bad) != "" {
			t.Errorf("normalize(%q) accepted", bad)
		}
	}
}

var secretRE = regexp.MustCompile(`id="totp_secret">([A-Z2-7 ]+)<`)

// enrolTOTP sets up an authenticator app through the security page and returns its secret
// and the page after the first code.
func (b *browser) enrolTOTP() ([]byte, page) {
	b.t.Helper()
	sec := b.get("/account/security")
	p := b.post("/account/security/totp", url.Values{"csrf_token": {hidden(sec.Body, "csrf_token")}, "next": {hidden(sec.Body, "next")}})
	m := secretRE.FindStringSubmatch(p.Body)
	if p.StatusCode != 200 || m == nil || !strings.Contains(p.Body, "<svg") {
		b.t.Fatalf("TOTP start = %d %s", p.StatusCode, p.Body)
	}
	secret, err := base32NoPad.DecodeString(strings.ReplaceAll(m[1], " ", ""))
	if err != nil {
		b.t.Fatal(err)
	}
	code := totpAt(secret, totpStep(b.ts.clock.Now()), 6)
	done := b.post("/account/security/totp/confirm", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "code": {code}, "next": {hidden(p.Body, "next")}})
	return secret, done
}

// factorPost sends the second-factor form with method and code.
func (b *browser) factorPost(method, code string) page {
	b.t.Helper()
	fp := b.get("/login/factor")
	return b.post("/login/factor", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "method": {method}, "code": {code}})
}

// loginTOTP signs in with the password and the current code of secret.
func (b *browser) loginTOTP(secret []byte) page {
	b.t.Helper()
	if p := b.login(); p.Header.Get("Location") != "/login/factor" {
		b.t.Fatalf("login = %d %s; want the second-factor step", p.StatusCode, p.Header.Get("Location"))
	}
	return b.factorPost("totp", totpAt(secret, totpStep(b.ts.clock.Now()), 6))
}

var codeRE = regexp.MustCompile(`<li><code>([a-z2-7-]{23})</code></li>`)

// TestTOTPEnrolAndSignIn: the QR code and secret are shown, a wrong first code enables
// nothing, the right one enables TOTP and shows ten recovery codes once; then the password
// is followed by the code, a code works once, and the ID token and introspection say how.
func TestTOTPEnrolAndSignIn(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	sec := b.get("/account/security")
	p := b.post("/account/security/totp", url.Values{"csrf_token": {hidden(sec.Body, "csrf_token")}})
	if !strings.Contains(p.Body, `<svg xmlns="http://www.w3.org/2000/svg" class="qr"`) || !strings.Contains(p.Body, `href="otpauth://totp/`) {
		t.Fatalf("enrolment page lacks the QR code or the otpauth link: %s", p.Body)
	}
	wrong := b.post("/account/security/totp/confirm", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "code": {"000000"}})
	if wrong.StatusCode != 400 || !strings.Contains(wrong.Body, "not right") {
		t.Errorf("wrong first code = %d", wrong.StatusCode)
	}
	if f, _ := ts.s.store.userFactors(t.Context(), ts.addUserID(t, "alice")); f.TOTP {
		t.Fatal("TOTP enabled by a wrong code")
	}
	secret, done := b.enrolTOTP() // starts again with a new secret
	codes := codeRE.FindAllStringSubmatch(done.Body, -1)
	if done.StatusCode != 200 || len(codes) != 10 || !strings.Contains(done.Body, "Download as a text file") {
		t.Fatalf("after enabling: %d, %d codes: %s", done.StatusCode, len(codes), done.Body)
	}
	// The download sends back exactly those codes, as a file.
	var joined []string
	for _, c := range codes {
		joined = append(joined, c[1])
	}
	dl := b.post("/account/security/recovery/download", url.Values{"csrf_token": {hidden(done.Body, "csrf_token")}, "codes": {strings.Join(joined, "\n")}})
	if dl.StatusCode != 200 || !strings.HasPrefix(dl.Header.Get("Content-Disposition"), "attachment") || !strings.Contains(dl.Body, joined[9]) {
		t.Errorf("download = %d %q %s", dl.StatusCode, dl.Header.Get("Content-Disposition"), dl.Body)
	}
	forged := b.post("/account/security/recovery/download", url.Values{"csrf_token": {hidden(done.Body, "csrf_token")}, "codes": {"aaaaa-bbbbb-ccccc-ddddd"}})
	if forged.StatusCode != 400 {
		t.Errorf("download of codes that are not the user's = %d", forged.StatusCode)
	}
	if sec := b.get("/account/security"); !strings.Contains(sec.Body, "10 of 10 recovery codes left") {
		t.Errorf("security page does not count the codes: %s", sec.Body)
	}

	c := ts.addClient(false, "openid profile", "https://app.example/cb")
	rs := ts.addServiceClient("read")
	ts.clock.Advance(totpPeriod * time.Second) // the enrolment used this step's code
	nb := ts.browser("alice", "correct horse battery")
	var verifier string
	q := codeRequest(c, &verifier)
	q.Set("nonce", "n-1")
	q.Set("scope", "openid profile offline_access")
	p = nb.get("/oauth/authorize?" + q.Encode())
	lp := nb.get(p.Header.Get("Location"))
	p = nb.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	if p.Header.Get("Location") != "/login/factor" {
		t.Fatalf("password = %d %s; want the second-factor step", p.StatusCode, p.Header.Get("Location"))
	}
	// The pending step is no session: nothing is reachable yet.
	if nb.signedIn() {
		t.Fatal("signed in after the password alone")
	}
	if p := nb.get("/oauth/authorize?" + q.Encode()); !strings.HasPrefix(p.Header.Get("Location"), "/login") {
		t.Fatalf("authorize before the second factor = %d %s", p.StatusCode, p.Header.Get("Location"))
	}
	code := totpAt(secret, totpStep(ts.clock.Now()), 6)
	p = nb.factorPost("totp", code)
	if p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/oauth/authorize") {
		t.Fatalf("TOTP = %d %s %s", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	p = nb.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	tok := ts.exchange(c, loc.Query().Get("code"), verifier)
	if tok.Status != 200 {
		t.Fatalf("exchange = %d %s", tok.Status, tok.Raw)
	}
	claims := jwtClaims(t, str(tok.JSON["id_token"]))
	if claims["acr"] != acrMFA || !sameAMR(claims["amr"], "pwd", "otp", "mfa") || claims["auth_time"] != float64(ts.clock.Now().Unix()) {
		t.Errorf("ID token amr %v acr %v auth_time %v", claims["amr"], claims["acr"], claims["auth_time"])
	}
	in := ts.postToken("/oauth/introspect", url.Values{"token": {str(tok.JSON["access_token"])}}, rs.ID, rs.Secret)
	if in.JSON["acr"] != acrMFA || !sameAMR(in.JSON["amr"], "pwd", "otp", "mfa") || in.JSON["auth_time"] != float64(ts.clock.Now().Unix()) {
		t.Errorf("introspection = %s", in.Raw)
	}
	// The refreshed ID token keeps amr and acr (OIDC Core §12.2).
	r := ts.refresh(c, str(tok.JSON["refresh_token"]))
	if cl := jwtClaims(t, str(r.JSON["id_token"])); cl["acr"] != acrMFA || !sameAMR(cl["amr"], "pwd", "otp", "mfa") {
		t.Errorf("refreshed ID token amr %v acr %v", cl["amr"], cl["acr"])
	}
	in = ts.postToken("/oauth/introspect", url.Values{"token": {str(r.JSON["access_token"])}}, rs.ID, rs.Secret)
	if in.JSON["acr"] != acrMFA {
		t.Errorf("introspection of the refreshed token = %s", in.Raw)
	}

	// The same code again, in its window, from another browser: refused.
	ob := ts.browser("alice", "correct horse battery")
	ob.login()
	if p := ob.factorPost("totp", code); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, "already used") {
		t.Fatalf("replayed code = %d %s", p.StatusCode, p.Body)
	}
	// The code of the previous step (still within the skew) is older than the used one: refused.
	if p := ob.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now())-1, 6)); p.StatusCode != http.StatusUnauthorized {
		t.Fatalf("earlier code = %d", p.StatusCode)
	}
	ts.clock.Advance(totpPeriod * time.Second)
	if p := ob.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("next code = %d %s", p.StatusCode, p.Body)
	}

	// A recovery code works once in place of the code.
	rb := ts.browser("alice", "correct horse battery")
	rb.login()
	if p := rb.factorPost("recovery", strings.ToUpper(joined[3])); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("recovery code = %d %s", p.StatusCode, p.Body)
	}
	rb2 := ts.browser("alice", "correct horse battery")
	rb2.login()
	if p := rb2.factorPost("recovery", joined[3]); p.StatusCode != http.StatusUnauthorized {
		t.Fatalf("recovery code again = %d", p.StatusCode)
	}
	if sec := rb.get("/account/security"); !strings.Contains(sec.Body, "9 of 10 recovery codes left") {
		t.Errorf("after one use: %s", sec.Body)
	}
	// New codes void the old ones (confirmed with the password).
	cp := rb.get("/account/security/recovery")
	np := rb.post("/account/security/recovery", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}, "password": {"correct horse battery"}})
	fresh := codeRE.FindAllStringSubmatch(np.Body, -1)
	if np.StatusCode != 200 || len(fresh) != 10 {
		t.Fatalf("new codes = %d %d", np.StatusCode, len(fresh))
	}
	ts.clock.Advance(totpPeriod * time.Second)
	if p := rb2.factorPost("recovery", joined[5]); p.StatusCode != http.StatusUnauthorized {
		t.Errorf("an old code after regeneration = %d", p.StatusCode)
	}
	rb3 := ts.browser("alice", "correct horse battery")
	rb3.login()
	if p := rb3.factorPost("recovery", fresh[0][1]); p.StatusCode != http.StatusSeeOther {
		t.Errorf("a new code = %d %s", p.StatusCode, p.Body)
	}
}

// jwtClaims decodes a JWT's claims (its signature is checked in oidc_test.go).
func jwtClaims(t testing.TB, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := b64.DecodeString(parts[1])
	var m map[string]any
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameAMR compares a decoded amr claim with want.
func sameAMR(v any, want ...string) bool {
	l, ok := v.([]any)
	if !ok || len(l) != len(want) {
		return false
	}
	for i, w := range want {
		if l[i] != w {
			return false
		}
	}
	return true
}

// TestTOTPBackoff: wrong codes count in the account's backoff like wrong passwords (and a
// right password does not clear them); a pending step allows five attempts.
func TestTOTPBackoff(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	secret, _ := b.enrolTOTP()
	ts.clock.Advance(time.Minute)

	x := ts.browser("alice", "correct horse battery") // someone who has the password
	x.login()
	for i := range maxFactorAttempts {
		if p := x.factorPost("totp", "000000"); p.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong code %d = %d", i+1, p.StatusCode)
		}
	}
	if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusForbidden ||
		!strings.Contains(p.Body, "too many wrong attempts") {
		t.Fatalf("after %d attempts, even the right code = %d; want the step ended", maxFactorAttempts, p.StatusCode)
	}
	// The account's count went on through the codes: its fifth failure (as for passwords)
	// starts the backoff, so now the password form waits too, even with the right password.
	y := ts.browser("alice", "correct horse battery")
	if p := y.login(); p.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("in backoff, the password form = %d; want 429", p.StatusCode)
	}
	ts.clock.Advance(2 * time.Second)
	if p := x.login(); p.Header.Get("Location") != "/login/factor" {
		t.Fatalf("password after the wait = %d", p.StatusCode)
	}
	if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the wait, the right code = %d %s", p.StatusCode, p.Body)
	}
	if d := ts.s.guard.users.wait("alice", ts.clock.Now()); d != 0 {
		t.Errorf("a complete sign-in leaves a wait of %v", d)
	}
}

// TestTOTPSecretAtRest: the secret is sealed under a 0600 key file beside the database; the
// database alone does not reveal it; a missing or wrong key file is an error, never a new key
// that would make the sealed secrets unreadable; `oauthd backup` says where the key is.
func TestTOTPSecretAtRest(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	secret, _ := b.enrolTOTP()
	keyFile := ts.s.cfg.DB + "-key"
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v %v", keyFile, fi, err)
	}
	sealed, _, _, err := ts.s.store.totpSecret(t.Context(), ts.addUserID(t, "alice"))
	if err != nil || bytes.Contains(sealed, secret) {
		t.Fatalf("stored secret: %v (contains the plain secret: %v)", err, bytes.Contains(sealed, secret))
	}
	raw, _ := os.ReadFile(ts.s.cfg.DB)
	wal, _ := os.ReadFile(ts.s.cfg.DB + "-wal")
	enc := base32NoPad.EncodeToString(secret)
	if bytes.Contains(raw, secret) || bytes.Contains(wal, secret) || bytes.Contains(raw, []byte(enc)) || bytes.Contains(wal, []byte(enc)) {
		t.Fatal("the database files contain the TOTP secret")
	}
	if g, _ := ts.s.mfa.seal.get(t.Context(), ts.s.store); g != nil {
		if _, err := openSecret(g, 999, sealed); err == nil {
			t.Error("a sealed secret opens for another user")
		}
	}
	// The backup says where the key is.
	var out bytes.Buffer
	if code := run(context.Background(), []string{"backup", "-db", ts.s.cfg.DB, filepath.Join(t.TempDir(), "b.db")}, nil, &out, &out, func(string) string { return "" }); code != 0 ||
		!strings.Contains(out.String(), keyFile) || !strings.Contains(out.String(), "apart") {
		t.Errorf("backup = %d %s", code, out.String())
	}

	// Without its key file the server refuses to make a new one.
	ts.clock.Advance(time.Minute)
	os.Rename(keyFile, keyFile+".saved")
	ts.s.mfa.seal = &sealer{path: keyFile}
	x := ts.browser("alice", "correct horse battery")
	x.login()
	if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("TOTP without the key file = %d", p.StatusCode)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a new key file was made while sealed secrets exist")
	}
	if !strings.Contains(ts.logs.String(), "missing: restore that file") {
		t.Errorf("the missing key file is not logged clearly: %s", ts.logs.String())
	}
	// Another key: refused as the wrong one.
	createSecretKey(keyFile)
	ts.s.mfa.seal = &sealer{path: keyFile}
	if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("TOTP with another key file = %d", p.StatusCode)
	}
	if !strings.Contains(ts.logs.String(), "is not the one") {
		t.Error("a wrong key file is not logged clearly")
	}
	// The right one back: it works again.
	os.Rename(keyFile+".saved", keyFile)
	ts.s.mfa.seal = &sealer{path: keyFile}
	if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("TOTP with the key file restored = %d %s", p.StatusCode, p.Body)
	}
	// Nothing secret in the log.
	if strings.Contains(ts.logs.String(), enc) || strings.Contains(ts.logs.String(), totpAt(secret, totpStep(ts.clock.Now()), 6)) {
		t.Error("the log contains a TOTP secret or code")
	}
}
