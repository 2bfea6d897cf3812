package main

// Second factors at sign-in: the policy (-mfa off|optional|required|admins, per-client
// require_mfa, acr_values), the step after the password (a TOTP code, a passkey or a
// recovery code), usernameless sign-in with a passkey, the step-up of a session that proved
// too little, the WebAuthn options the browser script fetches, and the claims that tell
// apps how the user signed in: amr (RFC 8176) and acr (OIDC Core §2) with auth_time.
//
// A password that checks out never starts a session by itself when a second factor is due:
// it starts a pending step (a row in mfa_pending behind its own cookie), which reaches no
// app and no account page, allows five attempts and ten minutes, and becomes a session only
// in the transaction that uses up the factor. The account's backoff is cleared only then, so
// a wrong code counts like a wrong password and a right password does not wipe the count.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// -mfa values.
const (
	mfaOff      = "off"      // no second factor is asked for or offered (passkeys still sign in)
	mfaOptional = "optional" // users who have a second factor are asked for it
	mfaRequired = "required" // every user must have one, and enrols right after the password
	mfaAdmins   = "admins"   // administrators must have one; others as optional
)

// acr values (OIDC Core §2): one factor, or two of different kinds.
const (
	acrPwd = "urn:oauthd:pwd"
	acrMFA = "urn:oauthd:mfa"
)

// Lifetimes and bounds of a pending second-factor step.
const (
	pendingTTL        = 10 * time.Minute
	maxFactorAttempts = 5
)

// mfaState is the server's WebAuthn and TOTP configuration.
type mfaState struct {
	rp    relyingParty
	rpOK  bool   // the issuer's host can be a WebAuthn RP ID (not an IP address)
	chKey []byte // HMAC key of WebAuthn challenges
	seal  *sealer
}

// newMFAState derives the WebAuthn relying party from the issuer and the challenge key
// from the server's CSRF key.
func newMFAState(cfg config, csrfKey []byte) mfaState {
	rp, ok := relyingPartyFor(cfg.Issuer)
	return mfaState{rp: rp, rpOK: ok, chKey: challengeMAC(csrfKey, "key", nil, nil), seal: &sealer{path: secretKeyFile(cfg.DB)}}
}

// passkeyWarning is the startup warning for an issuer whose host is an IP address.
func passkeyWarning(issuer string) string {
	if _, ok := relyingPartyFor(issuer); ok {
		return ""
	}
	return "passkeys are unavailable: the issuer " + issuer + " has an IP address for a host, which browsers refuse as a WebAuthn relying party ID; " +
		"use a host name (-issuer http://localhost:8080 to try it locally); TOTP works either way"
}

// ---- amr and acr

// amrOrder is the order amr lists are written in.
var amrOrder = []string{"pwd", "otp", "hwk", "swk", "user", "mfa"}

// amrJoin combines the methods of several steps into one amr list, adding "mfa" when
// something known (pwd) and something held (otp, hwk, swk) are both in it. A user-verified
// passkey brings "mfa" itself.
func amrJoin(parts ...string) string {
	set := map[string]bool{}
	for _, p := range parts {
		for f := range strings.FieldsSeq(p) {
			set[f] = true
		}
	}
	if set["pwd"] && (set["otp"] || set["hwk"] || set["swk"]) {
		set["mfa"] = true
	}
	var out []string
	for _, m := range amrOrder {
		if set[m] {
			out = append(out, m)
		}
	}
	return strings.Join(out, " ")
}

// acrOf is the acr of an amr list.
func acrOf(amr string) string {
	if amrHas(amr, "mfa") {
		return acrMFA
	}
	return acrPwd
}

// amrClaims sets amr and acr in ID token claims; grants older than second factors have none.
func amrClaims(amr string, claims map[string]any) {
	if amr == "" {
		return
	}
	claims["amr"] = strings.Fields(amr)
	claims["acr"] = acrOf(amr)
}

// amrList is a space-separated amr list that is written as a JSON array.
type amrList string

// MarshalJSON writes the list as a JSON array of strings.
func (a amrList) MarshalJSON() ([]byte, error) { return a.appendJSON(nil), nil }

// appendJSON appends the list as a JSON array, as encoding/json writes a []string.
func (a amrList) appendJSON(b []byte) []byte {
	b = append(b, '[')
	first := true
	for f := range strings.FieldsSeq(string(a)) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, f)
	}
	return append(b, ']')
}

// ---- policy

// policyNeedsMFA reports whether -mfa requires this user to sign in with two factors.
func (s *server) policyNeedsMFA(u user) bool {
	return s.cfg.MFA == mfaRequired || s.cfg.MFA == mfaAdmins && u.Admin
}

// acrWantsMFA reads acr_values (OIDC Core §3.1.2.1, in order of preference): the first of
// our values decides; unknown values are skipped.
func acrWantsMFA(v string) bool {
	for f := range strings.FieldsSeq(v) {
		switch f {
		case acrMFA:
			return true
		case acrPwd:
			return false
		}
	}
	return false
}

// needsMFA reports whether signing u in to c (with these acr_values) needs two factors.
func (s *server) needsMFA(u user, c client, acrValues string) bool {
	return c.RequireMFA || s.policyNeedsMFA(u) || acrWantsMFA(acrValues)
}

// usable tells which of a user's factors can be used here: TOTP and recovery codes unless
// -mfa off, passkeys when the issuer can be a relying party.
func (s *server) usable(f factors) (totp, passkeys, recovery bool) {
	on := s.cfg.MFA != mfaOff
	return f.TOTP && on, len(f.Passkeys) > 0 && s.mfa.rpOK, f.RecoveryLeft > 0 && on && f.any()
}

// nextNeedsMFA reports whether the place a sign-in returns to is an authorization request
// that needs two factors whoever signs in (its client, its acr_values, or -mfa required).
func (s *server) nextNeedsMFA(ctx context.Context, next string) bool {
	if s.cfg.MFA == mfaRequired {
		return true
	}
	u, err := url.Parse(next)
	if err != nil || u.Path != "/oauth/authorize" {
		return false
	}
	q := u.Query()
	if acrWantsMFA(q.Get("acr_values")) {
		return true
	}
	c, err := s.store.lookupClient(ctx, q.Get("client_id"))
	return err == nil && c.RequireMFA
}

// ---- the step after the password

// secondStep runs after a correct password (handleLogin): when a second factor is due it
// starts the pending step and sends the browser to it, or, when the policy requires a factor
// the user lacks, to enrol one. It reports whether it answered.
func (s *server) secondStep(w http.ResponseWriter, r *http.Request, u user, next string) bool {
	if s.cfg.MFA == mfaOff {
		return false
	}
	f, err := s.store.userFactors(r.Context(), u.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return true
	}
	totp, passkeys, _ := s.usable(f)
	switch {
	case totp || passkeys:
		s.startPending(w, r, pendingStep{UserID: u.ID, Kind: pendingFactor, AMR: "pwd", Next: next}, "/login/factor")
	case s.policyNeedsMFA(u):
		s.startPending(w, r, pendingStep{UserID: u.ID, Kind: pendingEnrol, AMR: "pwd", Next: next}, "/account/security")
	default:
		return false
	}
	s.log.Info("password accepted; second factor next", "user", u.Username, "from", s.sourceAddr(r))
	return true
}

// startPending stores a pending step behind a new oauthd_mfa cookie and redirects to path.
func (s *server) startPending(w http.ResponseWriter, r *http.Request, p pendingStep, path string) {
	tok := newSecret()
	p.Hash = hashSecret(tok)
	var replaced []byte
	if ck, err := r.Cookie(s.cookieName("oauthd_mfa")); err == nil && ck.Value != "" {
		replaced = hashSecret(ck.Value)
	}
	if err := s.store.createPendingStep(r.Context(), p, replaced, s.now().Add(pendingTTL).Unix()); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.setCookie(w, "oauthd_mfa", tok, int(pendingTTL/time.Second))
	http.Redirect(w, r, s.path(path), http.StatusSeeOther)
}

// pending returns the browser's live pending step of kind, if any.
func (s *server) pending(r *http.Request, kind string) (pendingStep, bool) {
	ck, err := r.Cookie(s.cookieName("oauthd_mfa"))
	if err != nil || ck.Value == "" {
		return pendingStep{}, false
	}
	p, err := s.store.pendingByHash(r.Context(), hashSecret(ck.Value), s.now().Unix())
	if err != nil {
		if !errors.Is(err, errNotFound) {
			s.log.Error("reading a pending sign-in failed", "cause", err)
		}
		return pendingStep{}, false
	}
	return p, p.Kind == kind
}

// stepUp asks a signed-in user for more than the session proved, then returns to next: a
// session without a password signs in again; one with a password proves a second factor,
// or, when the user has none, adds one on the security page.
func (s *server) stepUp(w http.ResponseWriter, r *http.Request, sess session, next string) {
	if !amrHas(sess.AMR, "pwd") {
		s.redirectToLogin(w, r, next, sess.User.Username)
		return
	}
	f, err := s.store.userFactors(r.Context(), sess.User.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	if totp, passkeys, _ := s.usable(f); totp || passkeys {
		s.startPending(w, r, pendingStep{UserID: sess.User.ID, Kind: pendingFactor, AMR: sess.AMR, SessionHash: sess.Hash, Next: next}, "/login/factor")
		return
	}
	http.Redirect(w, r, s.path("/account/security?"+url.Values{"next": {next}, "need": {"mfa"}}.Encode()), http.StatusSeeOther)
}

// factorPage is the second-factor form's data.
type factorPage struct {
	pageData
	Username                 string
	TOTP, Passkeys, Recovery bool
	Method, Error            string
	StepUp                   bool // a signed-in user proves more
}

// renderFactor shows the second-factor page for p.
func (s *server) renderFactor(w http.ResponseWriter, r *http.Request, p pendingStep, status int, method, msg string) {
	u, err := s.store.userByID(r.Context(), p.UserID)
	var f factors
	if err == nil {
		f, err = s.store.userFactors(r.Context(), p.UserID)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	totp, passkeys, recovery := s.usable(f)
	s.render(w, status, "security_factor", factorPage{pageData: pageData{CSRF: s.csrfToken(p.Hash, "factor")}, Username: u.Username,
		TOTP: totp, Passkeys: passkeys, Recovery: recovery, Method: method, Error: msg, StepUp: p.SessionHash != nil})
}

// handleFactorPage shows the second-factor step of a pending sign-in.
func (s *server) handleFactorPage(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pending(r, pendingFactor)
	if !ok {
		http.Redirect(w, r, s.path("/login"), http.StatusSeeOther)
		return
	}
	s.renderFactor(w, r, p, http.StatusOK, "", "")
}

// handleFactor checks a second factor — a TOTP code, a recovery code or a passkey — and
// turns the pending step into a session. The attempt is counted on the pending step first
// (at most maxFactorAttempts, whatever runs concurrently), and a failure counts in the
// account's backoff like a wrong password.
func (s *server) handleFactor(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(s.cookieName("oauthd_mfa"))
	if err != nil || ck.Value == "" {
		s.errorPage(w, http.StatusForbidden, "Sign-in expired", "This sign-in step has ended. Sign in again.")
		return
	}
	hash := hashSecret(ck.Value)
	if !s.checkCSRF(r, hash, "factor") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form expired. Sign in again.")
		return
	}
	now := s.now()
	p, err := s.store.countAttempt(r.Context(), hash, now.Unix(), maxFactorAttempts)
	if errors.Is(err, errNotFound) {
		s.setCookie(w, "oauthd_mfa", "", -1)
		s.errorPage(w, http.StatusForbidden, "Sign-in expired", "This sign-in step has expired or had too many wrong attempts. Sign in again.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	if p.Kind != pendingFactor {
		s.errorPage(w, http.StatusForbidden, "Request refused", "This sign-in step is not waiting for a second factor.")
		return
	}
	u, err := s.store.userByID(r.Context(), p.UserID)
	if err != nil || u.Disabled {
		s.setCookie(w, "oauthd_mfa", "", -1)
		s.errorPage(w, http.StatusForbidden, "Sign-in refused", "This account cannot sign in.")
		return
	}
	// Counted before the check in the account's and the address's backoff, like a password
	// (concurrent attempts on many pending steps cannot all pass a wait check first).
	account, from, fromKey := strings.ToLower(u.Username), s.sourceAddr(r), s.sourceKey(r)
	method := r.PostForm.Get("method")
	if d := s.guard.try(account, fromKey, now); d > 0 {
		w.Header().Set("Retry-After", retryAfter(d))
		s.renderFactor(w, r, p, http.StatusTooManyRequests, method, "Too many failed sign-ins for this account or from your network. Try again in "+waitText(d)+".")
		return
	}
	tok := newSecret()
	fin := &signIn{SessionHash: hashSecret(tok), UserID: u.ID, AuthTime: now.Unix(), ExpiresAt: now.Add(s.cfg.SessionTTL).Unix(), Pending: p.Hash}
	if p.SessionHash != nil {
		fin.Drop = append(fin.Drop, p.SessionHash)
	}
	if old, ok := s.session(r); ok {
		fin.Drop = append(fin.Drop, old.Hash)
	}
	f, err := s.store.userFactors(r.Context(), u.ID)
	if err != nil {
		s.guard.undo(account, fromKey)
		s.serverErrorPage(w, r, err)
		return
	}
	totp, passkeys, recovery := s.usable(f)
	var failure error
	switch {
	case method == "totp" && totp:
		fin.AMR = amrJoin(p.AMR, "otp")
		failure = s.checkTOTP(r.Context(), u, r.PostForm.Get("code"), now, fin)
	case method == "recovery" && recovery:
		fin.AMR = amrJoin(p.AMR, "otp")
		failure = errors.New("that is not one of your unused recovery codes")
		if code := normalizeRecoveryCode(r.PostForm.Get("code")); code != "" {
			if err := s.store.useRecoveryCode(r.Context(), u.ID, recoveryHash(u.ID, code), fin); err == nil {
				failure = nil
				s.log.Warn("recovery code used", "user", u.Username, "left", f.RecoveryLeft-1)
			} else if !errors.Is(err, errNotFound) {
				s.guard.undo(account, fromKey)
				s.serverErrorPage(w, r, err)
				return
			}
		}
	case method == "passkey" && passkeys:
		var pk passkey
		var as assertion
		pk, as, failure = s.checkPasskey(r, ceremony{purpose: purposeFactor, binding: p.Hash}, u.ID, 0)
		if failure == nil {
			fin.AMR = amrJoin(p.AMR, strings.Join(passkeyAMR(as.Flags), " "), uvAMR(as.Flags))
			failure = usedPasskey(s.store.usePasskey(r.Context(), pk, as.SignCount, as.Challenge, challengeExpiry(as.Challenge), now.Unix(), fin))
		}
	default:
		s.guard.undo(account, fromKey) // nothing was checked
		s.renderFactor(w, r, p, http.StatusBadRequest, "", "Choose a way to confirm that it is you.")
		return
	}
	var se storeErr
	if errors.As(failure, &se) {
		s.guard.undo(account, fromKey)
		s.serverErrorPage(w, r, se.err)
		return
	}
	if failure != nil { // already counted by try
		s.log.Info("second factor failed", "user", u.Username, "method", method, "reason", failure.Error(), "from", from)
		s.renderFactor(w, r, p, http.StatusUnauthorized, method, sentence(failure))
		return
	}
	s.guard.addrs.undo(fromKey)
	s.guard.users.reset(account)
	s.setCookie(w, "oauthd_session", tok, int(s.cfg.SessionTTL/time.Second))
	s.setCookie(w, "oauthd_mfa", "", -1)
	s.log.Info("login", "user", u.Username, "amr", fin.AMR, "from", from)
	http.Redirect(w, r, s.path(safeNext(p.Next)), http.StatusSeeOther)
}

// storeErr marks a storage fault among factor failures: it is a server error, not a wrong code.
type storeErr struct{ err error }

// Error is the storage fault's message (for the log).
func (e storeErr) Error() string { return e.err.Error() }

// usedPasskey maps what usePasskey returned to a factor failure: a replayed challenge or a
// concurrent use is the user's to retry, anything else a storage fault.
func usedPasskey(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errReplayed):
		return errWAReplayed
	}
	return storeErr{err}
}

// uvAMR is "mfa" for a user-verified passkey (the device checked a PIN or biometrics: two
// factors in one), "" otherwise.
func uvAMR(flags byte) string {
	if flags&flagUV != 0 {
		return "mfa"
	}
	return ""
}

// checkTOTP verifies a TOTP code of u and, when it is right and unused, writes fin with it.
func (s *server) checkTOTP(ctx context.Context, u user, code string, now time.Time, fin *signIn) error {
	sealed, confirmed, last, err := s.store.totpSecret(ctx, u.ID)
	if errors.Is(err, errNotFound) || err == nil && !confirmed {
		return errors.New("no authenticator app is set up for this account")
	}
	if err != nil {
		return storeErr{err}
	}
	secret, err := s.openTOTP(ctx, u.ID, sealed)
	if err != nil {
		return storeErr{err}
	}
	step, ok := matchTOTP(secret, code, now, last)
	if !ok {
		return errors.New("that code is wrong, or was already used: wait for the next one")
	}
	if err := s.store.useTOTP(ctx, u.ID, step, fin); errors.Is(err, errReplayed) {
		return errors.New("that code was already used: wait for the next one")
	} else if err != nil {
		return storeErr{err}
	}
	return nil
}

// openTOTP decrypts a user's sealed TOTP secret.
func (s *server) openTOTP(ctx context.Context, userID int64, sealed []byte) ([]byte, error) {
	g, err := s.mfa.seal.get(ctx, s.store)
	if err != nil {
		return nil, err
	}
	secret, err := openSecret(g, userID, sealed)
	if err != nil {
		return nil, errors.New("a TOTP secret does not open with the key file: the file is not the one it was sealed with")
	}
	return secret, nil
}

// ---- passkeys at sign-in

// webauthnFields are the browser's answer as webauthn.js posts it, base64url-decoded.
type webauthnFields struct {
	credentialID, clientData, authData, signature, userHandle, attestation []byte
}

// readWebAuthn decodes the answer's form fields; want names the ones that must be there.
func readWebAuthn(r *http.Request, want ...string) (webauthnFields, error) {
	var f webauthnFields
	dst := map[string]*[]byte{"credential_id": &f.credentialID, "client_data": &f.clientData, "authenticator_data": &f.authData,
		"signature": &f.signature, "user_handle": &f.userHandle, "attestation_object": &f.attestation}
	for name, p := range dst {
		v := r.PostForm.Get(name)
		b, err := b64.DecodeString(strings.TrimRight(v, "="))
		if err != nil {
			return f, errWAMalformed
		}
		if len(b) == 0 && slices.Contains(want, name) {
			return f, errWAMalformed
		}
		*p = b
	}
	return f, nil
}

// challengeExpiry reads the expiry out of one of our challenges (checked before).
func challengeExpiry(ch []byte) int64 {
	if len(ch) < 24 {
		return 0
	}
	var t int64
	for _, c := range ch[16:24] {
		t = t<<8 | int64(c)
	}
	return t
}

// checkPasskey verifies a posted assertion with purpose and binding: the credential must be
// registered, belong to userID when that is not 0 (and not be the passkey exclude), and the
// ceremony must check out. It logs a counter regression as a possible clone.
func (s *server) checkPasskey(r *http.Request, c ceremony, userID, exclude int64) (passkey, assertion, error) {
	if !s.mfa.rpOK {
		return passkey{}, assertion{}, errors.New("passkeys cannot be used with this server's address")
	}
	f, err := readWebAuthn(r, "credential_id", "client_data", "authenticator_data", "signature")
	if err != nil {
		return passkey{}, assertion{}, err
	}
	pk, err := s.store.passkeyByCredential(r.Context(), f.credentialID)
	if errors.Is(err, errNotFound) {
		return pk, assertion{}, errWAUnknown
	} else if err != nil {
		return pk, assertion{}, storeErr{err}
	}
	if userID != 0 && pk.UserID != userID || pk.ID == exclude {
		if pk.ID == exclude {
			return pk, assertion{}, errors.New("use another passkey than the one you are removing, or your password")
		}
		return pk, assertion{}, errWAOtherUser
	}
	u, err := s.store.userByID(r.Context(), pk.UserID)
	if err != nil {
		return pk, assertion{}, storeErr{err}
	}
	if len(f.userHandle) > 0 && string(f.userHandle) != u.Sub {
		return pk, assertion{}, errWAOtherUser
	}
	c.rp, c.key, c.now = s.mfa.rp, s.mfa.chKey, s.now()
	as, err := verifyAssertion(c, pk.PublicKey, pk.SignCount, f.clientData, f.authData, f.signature)
	if errors.Is(err, errWACounter) {
		s.log.Warn("passkey signature counter went backwards: possible cloned authenticator", "user", u.Username, "passkey_id", pk.ID,
			"stored_count", pk.SignCount)
	}
	return pk, as, err
}

// handlePasskeyLogin signs in with a discoverable passkey, without a username: the
// credential names the account, and a user-verified one is two factors in one.
func (s *server) handlePasskeyLogin(w http.ResponseWriter, r *http.Request) {
	bid := s.browserID(w, r)
	next := safeNext(r.PostForm.Get("next"))
	page := loginPage{pageData: pageData{CSRF: s.csrfToken(bid, "login")}, Next: next, Passkeys: s.mfa.rpOK}
	if !s.checkCSRF(r, bid, "login") {
		page.Error = "The form expired. Please sign in again."
		s.render(w, http.StatusForbidden, "login", page)
		return
	}
	now, from := s.now(), s.sourceAddr(r)
	pk, as, err := s.checkPasskey(r, ceremony{purpose: purposeLogin, binding: bid, requireUV: s.nextNeedsMFA(r.Context(), next)}, 0, 0)
	var u user
	if err == nil {
		if u, err = s.store.userByID(r.Context(), pk.UserID); err == nil && u.Disabled {
			err = errors.New("this account is disabled")
		}
	}
	tok := newSecret()
	fin := &signIn{SessionHash: hashSecret(tok), UserID: pk.UserID, AMR: amrJoin(strings.Join(passkeyAMR(as.Flags), " "), uvAMR(as.Flags)),
		AuthTime: now.Unix(), ExpiresAt: now.Add(s.cfg.SessionTTL).Unix()}
	if old, ok := s.session(r); ok {
		fin.Drop = append(fin.Drop, old.Hash)
	}
	if err == nil {
		err = usedPasskey(s.store.usePasskey(r.Context(), pk, as.SignCount, as.Challenge, challengeExpiry(as.Challenge), now.Unix(), fin))
	}
	var se storeErr
	if errors.As(err, &se) {
		s.serverErrorPage(w, r, se.err)
		return
	}
	if err != nil {
		s.log.Info("passkey sign-in failed", "user", u.Username, "reason", err.Error(), "from", from)
		page.Error = sentence(err)
		s.render(w, http.StatusUnauthorized, "login", page)
		return
	}
	s.guard.users.reset(strings.ToLower(u.Username))
	s.setCookie(w, "oauthd_session", tok, int(s.cfg.SessionTTL/time.Second))
	s.log.Info("login", "user", u.Username, "amr", fin.AMR, "from", from)
	http.Redirect(w, r, s.path(next), http.StatusSeeOther)
}

// ---- WebAuthn options for the browser

// b64s is base64url without padding, as the browser script converts it.
func b64s(b []byte) string { return b64.EncodeToString(b) }

// credentialList is the allowCredentials or excludeCredentials list of passkeys, minus skip.
func credentialList(ps []passkey, skip int64) []map[string]string {
	out := []map[string]string{}
	for _, p := range ps {
		if p.ID != skip {
			out = append(out, map[string]string{"type": "public-key", "id": b64s(p.CredentialID)})
		}
	}
	return out
}

// handleWebAuthnOptions answers the options of a WebAuthn ceremony (PublicKeyCredential
// creation or request options, WebAuthn §5.4 and §5.5) with a fresh challenge bound to what
// it is for and whom: for=login (the browser), factor (the pending sign-in), register (the
// session or enrolment step), confirm (the session; exclude leaves a passkey out).
func (s *server) handleWebAuthnOptions(w http.ResponseWriter, r *http.Request) {
	if !s.mfa.rpOK {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "unavailable", "error_description": passkeyWarning(s.cfg.Issuer)})
		return
	}
	now := s.now()
	req := map[string]any{"rpId": s.mfa.rp.ID, "timeout": challengeTTL.Milliseconds(), "userVerification": "preferred"}
	refuse := func() {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied", "error_description": "sign in again"})
	}
	q := r.URL.Query()
	switch q.Get("for") {
	case purposeLogin:
		req["challenge"] = b64s(newChallenge(s.mfa.chKey, purposeLogin, s.browserID(w, r), now))
		if s.nextNeedsMFA(r.Context(), safeNext(q.Get("next"))) {
			req["userVerification"] = "required"
		}
	case purposeFactor:
		p, ok := s.pending(r, pendingFactor)
		if !ok {
			refuse()
			return
		}
		ps, err := s.store.passkeys(r.Context(), p.UserID)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		req["challenge"], req["allowCredentials"] = b64s(newChallenge(s.mfa.chKey, purposeFactor, p.Hash, now)), credentialList(ps, 0)
	case purposeConfirm:
		sess, ok := s.session(r)
		if !ok {
			refuse()
			return
		}
		ps, err := s.store.passkeys(r.Context(), sess.User.ID)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		skip, _ := strconv.ParseInt(q.Get("exclude"), 10, 64)
		req["challenge"], req["allowCredentials"] = b64s(newChallenge(s.mfa.chKey, purposeConfirm, sess.Hash, now)), credentialList(ps, skip)
	case purposeRegister:
		a, ok := s.actor(r)
		if !ok {
			refuse()
			return
		}
		ps, err := s.store.passkeys(r.Context(), a.User.ID)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		display := a.User.Name
		if display == "" {
			display = a.User.Username
		}
		writeJSON(w, http.StatusOK, map[string]any{"publicKey": map[string]any{
			"rp":                     map[string]string{"id": s.mfa.rp.ID, "name": s.mfa.rp.ID},
			"user":                   map[string]string{"id": b64s([]byte(a.User.Sub)), "name": a.User.Username, "displayName": display},
			"challenge":              b64s(newChallenge(s.mfa.chKey, purposeRegister, a.binding, now)),
			"pubKeyCredParams":       []map[string]any{{"type": "public-key", "alg": coseES256}, {"type": "public-key", "alg": coseEdDSA}, {"type": "public-key", "alg": coseRS256}},
			"timeout":                challengeTTL.Milliseconds(),
			"attestation":            "none",
			"authenticatorSelection": map[string]any{"residentKey": "preferred", "requireResidentKey": false, "userVerification": "preferred"},
			"excludeCredentials":     credentialList(ps, 0),
		}})
		return
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": errInvalidRequest, "error_description": "for must be login, factor, register or confirm"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"publicKey": req})
}

// ---- operators

// handleAdminResetMFA removes every second factor of u and ends their sessions (the admin
// page's button; the CLI has `oauthd user mfa-reset`).
func (s *server) handleAdminResetMFA(w http.ResponseWriter, r *http.Request, sess session, u user) {
	n, err := s.store.resetFactors(r.Context(), u.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Warn("second factors reset by an administrator", "user", u.Username, "admin", sess.User.Username, "passkeys", n)
	s.renderAdmin(w, r, sess, http.StatusOK, "", "The second factors of "+u.Username+" are removed and their sessions ended.")
}

// factorJSON is one line of `oauthd user mfa NAME`: a factor, never a secret.
type factorJSON struct {
	Type      string `json:"type"` // passkey, totp or recovery_codes
	ID        int64  `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Kind      string `json:"kind,omitempty"` // a passkey's: synced or device-bound
	CreatedAt int64  `json:"created_at,omitempty"`
	LastUsed  int64  `json:"last_used,omitempty"`
	Confirmed *bool  `json:"confirmed,omitempty"` // totp: false while enrolment waits for its first code
	Left      int    `json:"left,omitempty"`      // recovery codes not yet used
}

// factorsJSON lists a user's factors for the CLI.
func factorsJSON(f factors) []factorJSON {
	var out []factorJSON
	for _, p := range f.Passkeys {
		kind := "device-bound"
		if p.Flags&flagBE != 0 {
			kind = "synced"
		}
		out = append(out, factorJSON{Type: "passkey", ID: p.ID, Name: p.Name, Kind: kind, CreatedAt: p.CreatedAt, LastUsed: p.LastUsed})
	}
	if f.TOTP || f.TOTPPending {
		out = append(out, factorJSON{Type: "totp", CreatedAt: f.TOTPCreatedAt, Confirmed: &f.TOTP})
	}
	if f.RecoveryLeft > 0 {
		out = append(out, factorJSON{Type: "recovery_codes", Left: f.RecoveryLeft})
	}
	return out
}

// runUserMFA is `oauthd user mfa NAME` (one JSON object per factor) and
// `oauthd user mfa-reset NAME` (every factor removed, every session ended).
func runUserMFA(ctx context.Context, st *store, cmd, name string, stdout, stderr io.Writer) error {
	u, err := st.userByName(ctx, name)
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("no user %q", name)
	} else if err != nil {
		return err
	}
	if cmd == "mfa-reset" {
		n, err := st.resetFactors(ctx, u.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "removed the second factors of %s (%d passkeys, TOTP, recovery codes); their sessions are ended\n", u.Username, n)
		return nil
	}
	f, err := st.userFactors(ctx, u.ID)
	if err != nil {
		return err
	}
	for _, m := range factorsJSON(f) {
		if err := printJSON(stdout, m); err != nil {
			return err
		}
	}
	return nil
}

// backupKeyNote is what `oauthd backup` says about the key file that seals TOTP secrets.
func backupKeyNote(db string) string {
	key := secretKeyFile(db)
	if _, err := os.Stat(key); err != nil {
		return "no TOTP key file (" + key + ") exists yet; once users set up authenticator apps, keep a copy of it apart from the backups"
	}
	return "TOTP secrets in the backup are sealed with the key in " + key + ", which the backup does not contain: keep a copy of that file with your backups but stored apart from them (either alone reveals no secret)"
}

// adminRequireMFA reads the client form's "require a second factor" box, which only an
// administrator may set; nil (unchanged) for anyone else.
func adminRequireMFA(sess session, f url.Values) *bool {
	if !sess.User.Admin {
		return nil
	}
	v := f.Get("require_mfa") == "on"
	return &v
}
