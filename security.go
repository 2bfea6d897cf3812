package main

// The account security page, /account/security: passkeys (WebAuthn registration, with
// names, dates, renaming and removal), an authenticator app (TOTP enrolment with a QR code,
// enabled only by a first valid code), recovery codes (shown once, downloadable, replaced as
// a set), and the confirmation — password or another passkey — that removing a factor or
// replacing the codes needs. A user whose policy requires a factor and who has none comes
// here from the sign-in, before any session exists (an enrolment step, mfa.go); adding the
// first factor then starts the session. Adding a factor when one exists needs a session that
// proved one, so that a stolen password cannot add the thief's own.

import (
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// actor is who is on the security page: a signed-in user, or a sign-in waiting to enrol.
type actor struct {
	User    user
	Sess    session      // zero during an enrolment step
	Pend    *pendingStep // the enrolment step, or nil
	binding []byte       // what forms and challenges are bound to: the session or the step
}

// actor finds the enrolment step of the browser, else its session.
func (s *server) actor(r *http.Request) (actor, bool) {
	if p, ok := s.pending(r, pendingEnrol); ok {
		u, err := s.store.userByID(r.Context(), p.UserID)
		if err == nil && !u.Disabled {
			return actor{User: u, Pend: &p, binding: p.Hash}, true
		}
	}
	if sess, ok := s.session(r); ok {
		return actor{User: sess.User, Sess: sess, binding: sess.Hash}, true
	}
	return actor{}, false
}

// requireActor is actor for a handler: a GET without one goes to sign in, a POST is refused;
// a POST must carry the security form's token.
func (s *server) requireActor(w http.ResponseWriter, r *http.Request) (actor, bool) {
	a, ok := s.actor(r)
	if !ok {
		if r.Method == http.MethodGet {
			s.redirectToLogin(w, r, r.URL.RequestURI(), "")
		} else {
			s.errorPage(w, http.StatusForbidden, "Session ended", "You are no longer signed in.")
		}
		return a, false
	}
	if r.Method == http.MethodPost && !s.checkCSRF(r, a.binding, "security") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form expired. Go back to the security page and try again.")
		return a, false
	}
	return a, true
}

// requireSignedIn is requireActor for what only a session may do (remove, rename, replace).
func (s *server) requireSignedIn(w http.ResponseWriter, r *http.Request) (actor, bool) {
	a, ok := s.requireActor(w, r)
	if ok && a.Pend != nil {
		s.errorPage(w, http.StatusForbidden, "Add a second factor first", "Finish adding a second factor to sign in; then you can change your factors.")
		return a, false
	}
	return a, ok
}

// pageData is the base layout's data for a: no menu during an enrolment step.
func (a actor) pageData(s *server) pageData {
	if a.Pend != nil {
		return pageData{CSRF: s.csrfToken(a.binding, "security")}
	}
	return s.pageData(a.Sess, "security")
}

// securityPage is /account/security.
type securityPage struct {
	pageData
	Enrol        bool   // an enrolment step: the policy requires a factor before signing in
	Need         bool   // an application asked for a second factor the user lacks
	Next         string // where to continue once a factor is there
	PasskeysOK   bool
	RPWarning    string
	TOTPOffered  bool
	Passkeys     []passkey
	TOTP         bool
	RecoveryLeft int
	HasFactor    bool
	MustStepUp   bool // the user has a factor this session did not prove: adding another needs it
	Required     bool // -mfa requires this user to have a factor
	Notice       string
	Error        string
}

// renderSecurity shows the security page of a.
func (s *server) renderSecurity(w http.ResponseWriter, r *http.Request, a actor, status int, notice, errMsg string) {
	f, err := s.store.userFactors(r.Context(), a.User.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	next := safeNext(r.FormValue("next"))
	if a.Pend != nil {
		next = safeNext(a.Pend.Next)
	}
	page := securityPage{pageData: a.pageData(s), Enrol: a.Pend != nil, Need: r.FormValue("need") == "mfa", Next: next,
		PasskeysOK: s.mfa.rpOK, RPWarning: sentence(errors.New(passkeyWarning(s.cfg.Issuer))), TOTPOffered: s.cfg.MFA != mfaOff,
		Passkeys: f.Passkeys, TOTP: f.TOTP, RecoveryLeft: f.RecoveryLeft, HasFactor: f.any(),
		MustStepUp: a.Pend == nil && f.any() && !amrHas(a.Sess.AMR, "mfa"), Required: s.policyNeedsMFA(a.User),
		Notice: notice, Error: errMsg}
	if page.Need && amrHas(a.Sess.AMR, "mfa") {
		page.Notice = strings.TrimSpace(page.Notice + " You can now continue.")
	}
	s.render(w, status, "security", page)
}

// handleSecurityPage shows the security page.
func (s *server) handleSecurityPage(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.requireActor(w, r); ok {
		s.renderSecurity(w, r, a, http.StatusOK, "", "")
	}
}

// errStepUpFirst: adding a factor while another exists needs a session that proved one.
var errStepUpFirst = errors.New("to add another second factor, first confirm with one you have")

// mayAdd checks that a may add a factor now.
func (s *server) mayAdd(r *http.Request, a actor) error {
	if a.Pend != nil || amrHas(a.Sess.AMR, "mfa") {
		return nil
	}
	f, err := s.store.userFactors(r.Context(), a.User.ID)
	if err != nil {
		return storeErr{err}
	}
	if f.any() {
		return errStepUpFirst
	}
	return nil
}

// enrolled is the sign-in that adding a factor completes: the enrolment step becomes a
// session, or the session is replaced by one that also proved method.
func (s *server) enrolled(r *http.Request, a actor, method string, now time.Time) (*signIn, string) {
	tok := newSecret()
	fin := &signIn{SessionHash: hashSecret(tok), UserID: a.User.ID, AuthTime: now.Unix(), ExpiresAt: now.Add(s.cfg.SessionTTL).Unix()}
	if a.Pend != nil {
		fin.AMR, fin.Pending = amrJoin(a.Pend.AMR, method), a.Pend.Hash
		if old, ok := s.session(r); ok {
			fin.Drop = append(fin.Drop, old.Hash)
		}
	} else {
		fin.AMR, fin.Drop = amrJoin(a.Sess.AMR, method), [][]byte{a.Sess.Hash}
	}
	return fin, tok
}

// afterEnrol sets the new session's cookie and shows the recovery codes of a first factor,
// or the security page.
func (s *server) afterEnrol(w http.ResponseWriter, r *http.Request, a actor, fin *signIn, tok string, codes []string, wrote bool, what string) {
	s.setCookie(w, "oauthd_session", tok, int(s.cfg.SessionTTL/time.Second))
	next := safeNext(r.PostForm.Get("next"))
	if a.Pend != nil {
		s.setCookie(w, "oauthd_mfa", "", -1)
		next = safeNext(a.Pend.Next)
		s.log.Info("login", "user", a.User.Username, "amr", fin.AMR, "from", s.sourceAddr(r))
	}
	sess := session{Hash: fin.SessionHash, User: a.User, AMR: fin.AMR}
	if wrote {
		s.showCodes(w, sess, codes, next, what+" Save these recovery codes now: each one signs you in once if you lose your second factor.")
		return
	}
	s.renderSecurity(w, r, actor{User: a.User, Sess: sess, binding: sess.Hash}, http.StatusOK, what, "")
}

// codesPage shows recovery codes once.
type codesPage struct {
	pageData
	Codes   []string
	Joined  string // the codes, one per line, for the download form
	Next    string
	Message string
}

// showCodes renders the recovery codes page.
func (s *server) showCodes(w http.ResponseWriter, sess session, codes []string, next, msg string) {
	s.render(w, http.StatusOK, "security_codes", codesPage{pageData: s.pageData(sess, "security"), Codes: codes,
		Joined: strings.Join(codes, "\n"), Next: next, Message: msg})
}

// newCodes makes a set of recovery codes and their hashes for userID.
func newCodes(userID int64) ([]string, [][]byte) {
	codes := make([]string, recoveryCodes)
	hashes := make([][]byte, recoveryCodes)
	for i := range codes {
		codes[i] = newRecoveryCode()
		hashes[i] = recoveryHash(userID, normalizeRecoveryCode(codes[i]))
	}
	return codes, hashes
}

// refuseSecurity answers a refused security action on the security page; a storage fault
// gets the 503 page.
func (s *server) refuseSecurity(w http.ResponseWriter, r *http.Request, a actor, status int, err error) {
	var se storeErr
	if errors.As(err, &se) {
		s.serverErrorPage(w, r, se.err)
		return
	}
	s.renderSecurity(w, r, a, status, "", sentence(err))
}

// handleSecurityStepUp lets a signed-in user prove a second factor on the spot, to come back
// and add another.
func (s *server) handleSecurityStepUp(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.requireSignedIn(w, r); ok {
		s.stepUp(w, r, a.Sess, "/account/security")
	}
}

// ---- TOTP

// totpPage is the authenticator app enrolment.
type totpPage struct {
	pageData
	QR     template.HTML // our own SVG
	URI    template.URL  // otpauth://, to open an app on the same device
	Secret string        // base32 in groups of four
	Next   string
	Error  string
}

// renderTOTP shows the enrolment page for a secret.
func (s *server) renderTOTP(w http.ResponseWriter, r *http.Request, a actor, secret []byte, status int, msg string) {
	issuer := s.mfa.rp.ID
	if s.cfg.Name != "" && s.cfg.Name != "oauthd" {
		issuer = s.cfg.Name // -name: what the authenticator app shows
	}
	if issuer == "" {
		issuer = strings.TrimPrefix(strings.TrimPrefix(s.cfg.Issuer, "https://"), "http://")
	}
	uri := otpauthURI(issuer, a.User.Username, secret)
	var qr template.HTML
	if q, err := encodeQR([]byte(uri)); err == nil {
		qr = template.HTML(q.svg("QR code of your authenticator app secret")) // built from our own data, escaped
	}
	next := safeNext(r.PostForm.Get("next"))
	s.render(w, status, "security_totp", totpPage{pageData: a.pageData(s), QR: qr, URI: template.URL(uri), Secret: groupSecret(secret), Next: next, Error: msg})
}

// handleTOTPStart makes a new secret, stores it sealed and unconfirmed, and shows it.
func (s *server) handleTOTPStart(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireActor(w, r)
	if !ok {
		return
	}
	if s.cfg.MFA == mfaOff {
		s.refuseSecurity(w, r, a, http.StatusForbidden, errors.New("authenticator apps are turned off on this server"))
		return
	}
	if err := s.mayAdd(r, a); err != nil {
		s.refuseSecurity(w, r, a, http.StatusForbidden, err)
		return
	}
	g, err := s.mfa.seal.get(r.Context(), s.store)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	secret := newRandom(totpKeySize)
	err = s.store.startTOTP(r.Context(), a.User.ID, sealSecret(g, a.User.ID, secret), s.now().Unix())
	if errors.Is(err, errNotFound) {
		s.refuseSecurity(w, r, a, http.StatusConflict, errors.New("an authenticator app is already set up; remove it first to set up another"))
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.renderTOTP(w, r, a, secret, http.StatusOK, "")
}

// handleTOTPConfirm enables the waiting secret with a first valid code.
func (s *server) handleTOTPConfirm(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireActor(w, r)
	if !ok {
		return
	}
	if err := s.mayAdd(r, a); err != nil {
		s.refuseSecurity(w, r, a, http.StatusForbidden, err)
		return
	}
	sealed, confirmed, _, err := s.store.totpSecret(r.Context(), a.User.ID)
	if errors.Is(err, errNotFound) || err == nil && confirmed {
		s.refuseSecurity(w, r, a, http.StatusConflict, errors.New("no authenticator app is waiting to be set up; start again"))
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	secret, err := s.openTOTP(r.Context(), a.User.ID, sealed)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	now := s.now()
	step, ok := matchTOTP(secret, r.PostForm.Get("code"), now, 0)
	if !ok {
		s.renderTOTP(w, r, a, secret, http.StatusBadRequest, "That code is not right. Check the time on your phone and type the code the app shows now.")
		return
	}
	codes, hashes := newCodes(a.User.ID)
	fin, tok := s.enrolled(r, a, "otp", now)
	wrote, err := s.store.confirmTOTP(r.Context(), a.User.ID, step, hashes, now.Unix(), fin)
	if errors.Is(err, errNotFound) {
		s.refuseSecurity(w, r, a, http.StatusConflict, errors.New("no authenticator app is waiting to be set up; start again"))
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("authenticator app added", "user", a.User.Username)
	s.afterEnrol(w, r, a, fin, tok, codes, wrote, "Authenticator app added.")
}

// ---- passkeys

// passkeyName checks a passkey's name: 1-64 characters on one line ("" becomes "Passkey").
func passkeyName(n string) (string, error) {
	n = strings.TrimSpace(n)
	if n == "" {
		return "Passkey", nil
	}
	if !utf8.ValidString(n) || utf8.RuneCountInString(n) > 64 || strings.IndexFunc(n, unicode.IsControl) >= 0 {
		return "", errors.New("a passkey's name has at most 64 characters on one line")
	}
	return n, nil
}

// handlePasskeyAdd stores a passkey from a verified registration (webauthn.js posts it).
func (s *server) handlePasskeyAdd(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireActor(w, r)
	if !ok {
		return
	}
	if !s.mfa.rpOK {
		s.refuseSecurity(w, r, a, http.StatusConflict, errors.New(passkeyWarning(s.cfg.Issuer)))
		return
	}
	if err := s.mayAdd(r, a); err != nil {
		s.refuseSecurity(w, r, a, http.StatusForbidden, err)
		return
	}
	name, err := passkeyName(r.PostForm.Get("name"))
	if err != nil {
		s.refuseSecurity(w, r, a, http.StatusBadRequest, err)
		return
	}
	f, err := readWebAuthn(r, "client_data", "attestation_object")
	if err != nil {
		s.refuseSecurity(w, r, a, http.StatusBadRequest, err)
		return
	}
	now := s.now()
	cred, err := verifyRegistration(ceremony{rp: s.mfa.rp, key: s.mfa.chKey, purpose: purposeRegister, binding: a.binding, now: now},
		f.clientData, f.attestation)
	if err != nil {
		s.log.Info("passkey registration refused", "user", a.User.Username, "reason", err.Error())
		s.refuseSecurity(w, r, a, http.StatusBadRequest, err)
		return
	}
	codes, hashes := newCodes(a.User.ID)
	method := strings.Join(passkeyAMR(cred.Flags), " ")
	fin, tok := s.enrolled(r, a, method, now)
	pk := passkey{UserID: a.User.ID, CredentialID: cred.ID, PublicKey: cred.PublicKey, Alg: cred.Alg, SignCount: cred.SignCount,
		Flags: cred.Flags, Name: name, CreatedAt: now.Unix()}
	wrote, err := s.store.addPasskey(r.Context(), pk, cred.Challenge, challengeExpiry(cred.Challenge), hashes, fin)
	switch {
	case errors.Is(err, errReplayed):
		s.refuseSecurity(w, r, a, http.StatusBadRequest, errWAReplayed)
		return
	case errors.Is(err, errExists):
		s.refuseSecurity(w, r, a, http.StatusConflict, errors.New("this passkey is already registered"))
		return
	case err != nil:
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("passkey added", "user", a.User.Username, "alg", cred.Alg, "synced", cred.Flags&flagBE != 0)
	s.afterEnrol(w, r, a, fin, tok, codes, wrote, "Passkey “"+name+"” added.")
}

// passkeyID reads the {id} of a passkey path.
func passkeyID(r *http.Request) int64 {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	return id
}

// handlePasskeyRename renames a passkey.
func (s *server) handlePasskeyRename(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireSignedIn(w, r)
	if !ok {
		return
	}
	name, err := passkeyName(r.PostForm.Get("name"))
	if err != nil {
		s.refuseSecurity(w, r, a, http.StatusBadRequest, err)
		return
	}
	switch err := s.store.renamePasskey(r.Context(), a.User.ID, passkeyID(r), name); {
	case errors.Is(err, errNotFound):
		s.refuseSecurity(w, r, a, http.StatusNotFound, errors.New("there is no such passkey"))
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.renderSecurity(w, r, a, http.StatusOK, "Passkey renamed.", "")
	}
}

// ---- confirmations

// reauthPage asks for the password or another passkey before a sensitive change.
type reauthPage struct {
	pageData
	Title, Message, Action, Button string
	Exclude                        int64 // the passkey being removed, which cannot confirm it
	Passkeys                       bool  // the user has a passkey that can confirm
	Error                          string
}

// confirmFor describes the confirmation of the action at path (nil: not one).
func (s *server) confirmFor(r *http.Request, a actor) (*reauthPage, error) {
	f, err := s.store.userFactors(r.Context(), a.User.ID)
	if err != nil {
		return nil, err
	}
	p := &reauthPage{pageData: a.pageData(s)}
	switch r.URL.Path {
	case "/account/security/totp/delete":
		p.Title, p.Message, p.Button = "Remove the authenticator app?", "Codes from your authenticator app will no longer sign you in. Your other sessions are signed out.", "Remove"
	case "/account/security/recovery":
		p.Title, p.Message, p.Button = "Make new recovery codes?", "Your current recovery codes stop working and ten new ones are shown once.", "Make new codes"
	default:
		id := passkeyID(r)
		var name string
		for _, pk := range f.Passkeys {
			if pk.ID == id {
				name = pk.Name
			}
		}
		if name == "" {
			return nil, nil
		}
		p.Title, p.Button, p.Exclude = "Remove the passkey “"+name+"”?", "Remove", id
		p.Message = "It will no longer sign you in. Your other sessions are signed out."
	}
	p.Action = r.URL.Path
	for _, pk := range f.Passkeys {
		if pk.ID != p.Exclude && s.mfa.rpOK {
			p.Passkeys = true
		}
	}
	return p, nil
}

// handleConfirmPage shows the confirmation of a removal or of new recovery codes.
func (s *server) handleConfirmPage(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireSignedIn(w, r)
	if !ok {
		return
	}
	p, err := s.confirmFor(r, a)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	} else if p == nil {
		s.renderSecurity(w, r, a, http.StatusNotFound, "", "There is no such passkey.")
		return
	}
	s.render(w, http.StatusOK, "security_confirm", p)
}

// confirmed checks the confirmation posted with a sensitive change: the password (counted in
// the account's backoff like a sign-in) or an assertion of one of the user's passkeys other
// than the one being removed. It answers a failure itself.
func (s *server) confirmed(w http.ResponseWriter, r *http.Request, a actor, p *reauthPage) bool {
	fail := func(status int, msg string) bool {
		p.Error = msg
		s.render(w, status, "security_confirm", p)
		return false
	}
	now, account := s.now(), strings.ToLower(a.User.Username)
	if pw := r.PostForm.Get("password"); pw != "" {
		// Counted before the hash (backoff.try), so that concurrent guesses from a stolen
		// session cannot all pass a wait check first.
		if d := s.guard.users.try(account, now); d > 0 {
			w.Header().Set("Retry-After", retryAfter(d))
			return fail(http.StatusTooManyRequests, "Too many failed attempts for this account. Try again in "+waitText(d)+".")
		}
		var good bool
		if !s.hashing(w, func() { good = checkPassword(pw, a.User.PasswordHash) }) {
			s.guard.users.undo(account) // not checked: not an attempt
			return false
		}
		if !good {
			s.log.Info("confirmation failed", "user", a.User.Username, "method", "pwd", "from", s.sourceAddr(r))
			return fail(http.StatusUnauthorized, "That password is not right.")
		}
		s.guard.users.reset(account)
		return true
	}
	if r.PostForm.Get("credential_id") != "" {
		pk, as, err := s.checkPasskey(r, ceremony{purpose: purposeConfirm, binding: a.binding}, a.User.ID, p.Exclude)
		if err == nil {
			err = usedPasskey(s.store.usePasskey(r.Context(), pk, as.SignCount, as.Challenge, challengeExpiry(as.Challenge), now.Unix(), nil))
		}
		var se storeErr
		if errors.As(err, &se) {
			s.serverErrorPage(w, r, se.err)
			return false
		}
		if err != nil {
			s.log.Info("confirmation failed", "user", a.User.Username, "method", "passkey", "reason", err.Error())
			return fail(http.StatusUnauthorized, sentence(err))
		}
		return true
	}
	return fail(http.StatusBadRequest, "Enter your password, or use a passkey, to confirm.")
}

// handleConfirmed carries out a confirmed removal or replacement.
func (s *server) handleConfirmed(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireSignedIn(w, r)
	if !ok {
		return
	}
	p, err := s.confirmFor(r, a)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	} else if p == nil {
		s.renderSecurity(w, r, a, http.StatusNotFound, "", "There is no such passkey.")
		return
	}
	p.CSRF = s.csrfToken(a.binding, "security")
	if !s.confirmed(w, r, a, p) {
		return
	}
	ctx, uid := r.Context(), a.User.ID
	switch r.URL.Path {
	case "/account/security/totp/delete":
		err = s.store.deleteTOTP(ctx, uid, a.Sess.Hash)
		if err == nil {
			s.log.Info("authenticator app removed", "user", a.User.Username)
			s.renderSecurity(w, r, a, http.StatusOK, "Authenticator app removed. Your other sessions are signed out.", "")
		}
	case "/account/security/recovery":
		f, ferr := s.store.userFactors(ctx, uid)
		if ferr != nil {
			err = ferr
			break
		}
		if !f.any() {
			s.renderSecurity(w, r, a, http.StatusConflict, "", "Recovery codes replace a second factor: add one first.")
			return
		}
		codes, hashes := newCodes(uid)
		if err = s.store.setRecoveryCodes(ctx, uid, hashes, s.now().Unix()); err == nil {
			s.log.Info("recovery codes replaced", "user", a.User.Username)
			s.showCodes(w, a.Sess, codes, "/account/security", "Your earlier recovery codes no longer work. Save these now.")
		}
	default:
		err = s.store.deletePasskey(ctx, uid, p.Exclude, a.Sess.Hash)
		if err == nil {
			s.log.Info("passkey removed", "user", a.User.Username, "passkey_id", p.Exclude)
			s.renderSecurity(w, r, a, http.StatusOK, "Passkey removed. Your other sessions are signed out.", "")
		}
	}
	if errors.Is(err, errNotFound) {
		s.renderSecurity(w, r, a, http.StatusNotFound, "", "It was already removed.")
	} else if err != nil {
		s.serverErrorPage(w, r, err)
	}
}

// handleRecoveryDownload sends the recovery codes just shown as a text file. oauthd keeps
// only their hashes, so the page posts them back; only the user's own unused codes are sent.
func (s *server) handleRecoveryDownload(w http.ResponseWriter, r *http.Request) {
	a, ok := s.requireSignedIn(w, r)
	if !ok {
		return
	}
	var hashes [][]byte
	var lines []string
	for l := range strings.SplitSeq(r.PostForm.Get("codes"), "\n") {
		if c := normalizeRecoveryCode(l); c != "" {
			hashes = append(hashes, recoveryHash(a.User.ID, c))
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	n, err := s.store.hasRecoveryCodes(r.Context(), a.User.ID, hashes)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	if n == 0 || n != len(hashes) || n > recoveryCodes {
		s.renderSecurity(w, r, a, http.StatusBadRequest, "", "These are not your current recovery codes; make new ones to download them.")
		return
	}
	body := "Recovery codes for " + a.User.Username + " at " + s.cfg.Issuer + "\n" +
		"Each code signs you in once in place of your second factor. Keep them somewhere safe.\n\n" + strings.Join(lines, "\n") + "\n"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="oauthd-recovery-codes.txt"`)
	h.Set("Cache-Control", "no-store")
	w.Write([]byte(body))
}
