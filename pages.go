package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

//go:embed templates
var templateFS embed.FS

// parsePages parses each page together with the base layout, once, at start.
// prefix is the issuer's path, which every link a page makes to oauthd starts with ({{path
// "/login"}}, prefix.go); pathEscape escapes a value for one path segment (client ids of
// metadata documents are URLs).
func parsePages(site, logoURL, prefix string) map[string]*template.Template {
	pages := map[string]*template.Template{}
	funcs := template.FuncMap{"date": date, "join": strings.Join, "synced": func(f byte) bool { return f&flagBE != 0 },
		"site": func() string { return site }, "logo": func() string {
			if logoURL == "" {
				return ""
			}
			return prefix + logoURL
		},
		"path": func(p string) string { return prefix + p }, "pathEscape": url.PathEscape}
	for _, name := range []string{"login", "consent", "error", "newaccount", "home", "account", "logout", "message", "device",
		"client_form", "clients", "client_secret", "client_delete", "connections", "admin_users", "link", "reset", "confirm", "redirect_error", "forgot", "activity",
		"groups", "groups_edit", "groups_delete", "groups_noaccess", "admin_user",
		"security", "security_totp", "security_codes", "security_confirm", "security_factor", "admin_resources"} {
		pages[name] = template.Must(template.New("base.html").Funcs(funcs).ParseFS(templateFS, "templates/base.html", "templates/"+name+".html"))
	}
	// Shown under a protected app's origin too (forwardauth.go): its own layout, absolute URLs.
	pages["forwardauth_page"] = template.Must(template.New("forwardauth_page.html").Funcs(funcs).ParseFS(templateFS, "templates/forwardauth_page.html"))
	return pages
}

// pageData is what the base layout needs on every page.
type pageData struct {
	User   string // logged-in username, "" when anonymous
	Admin  bool   // the signed-in user is an administrator (the menu shows the admin page)
	CSRF   string // token for this page's form
	Notice string // a one-time notice: what the form posted before this page did
}

// pageData fills the base layout's data for a page whose form is bound to sess.
func (s *server) pageData(sess session, form string) pageData {
	d := pageData{User: sess.User.Username, Admin: sess.User.Admin}
	if sess.Hash != nil {
		d.CSRF = s.csrfToken(sess.Hash, form)
	}
	return d
}

// render executes a page into a buffer first, so that a template error never sends half a page.
func (s *server) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "base", data); err != nil {
		s.log.Error("rendering a page failed", "page", name, "cause", err)
		http.Error(w, "The page could not be shown.", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// messagePage is a page that only tells something, with a way on.
type messagePage struct {
	pageData
	Title, Message string
	Next           []navLink // where to go from here; none: the home page
	Back           string    // error pages: a link returning the error to the application (a validated redirect URI)
}

// navLink is a link offered as the way on from a page.
type navLink struct{ Href, Text string }

// errorPage tells a person what went wrong; used wherever a redirect would be unsafe.
func (s *server) errorPage(w http.ResponseWriter, status int, title, msg string) {
	s.renderError(w, status, title, msg, "")
}

// renderError is errorPage with, when back is not empty, a link that returns the error to
// the application (a validated redirect URI carrying it).
func (s *server) renderError(w http.ResponseWriter, status int, title, msg, back string) {
	s.render(w, status, "error", messagePage{Title: title, Message: msg, Back: back})
}

// serverErrorPage logs a storage fault and shows a page without its details.
func (s *server) serverErrorPage(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request failed", "path", r.URL.Path, "cause", err)
	s.errorPage(w, http.StatusServiceUnavailable, "Temporarily unavailable", "The server could not complete the request. Try again in a moment.")
}

// headers sets the security headers on every response.
func (s *server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' https:; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// form wraps an HTML form handler: cross-origin POSTs are refused (http.CrossOriginProtection),
// the bounded body is parsed and a repeated field is refused.
func (s *server) form(h http.HandlerFunc) http.Handler {
	return s.cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.errorPage(w, http.StatusRequestEntityTooLarge, "Request too large", "The form sent more data than the server accepts.")
				return
			}
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The form could not be read.")
			return
		}
		for k, v := range r.PostForm {
			if len(v) > 1 {
				s.errorPage(w, http.StatusBadRequest, "Invalid request", "The form repeats the field "+k+".")
				return
			}
		}
		h(w, r)
	}))
}

// handleStatic serves the stylesheet and the one small script (the copy buttons).
func (s *server) handleStatic(w http.ResponseWriter, r *http.Request) {
	types := map[string]string{"style.css": "text/css; charset=utf-8", "copy.js": "text/javascript; charset=utf-8", "webauthn.js": "text/javascript; charset=utf-8"}
	name := r.PathValue("name")
	ct, ok := types[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, _ := templateFS.ReadFile("templates/" + name)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(b)
}

// ---- cookies, sessions, CSRF

// cookieName uses the __Host- prefix when the issuer is https (the prefix requires Secure),
// or __Secure- for an issuer with a path (__Host- also requires Path=/).
func (s *server) cookieName(base string) string {
	switch {
	case s.secure && s.prefix != "":
		return "__Secure-" + base
	case s.secure:
		return "__Host-" + base
	}
	return base
}

func (s *server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(name), Value: value, Path: s.cookiePath(), MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// session returns the logged-in session of the request, if any.
func (s *server) session(r *http.Request) (session, bool) {
	ck, err := r.Cookie(s.cookieName("oauthd_session"))
	if err != nil || ck.Value == "" {
		return session{}, false
	}
	sess, err := s.store.sessionByHash(r.Context(), hashSecret(ck.Value), s.now().Unix())
	if err != nil {
		if !errors.Is(err, errNotFound) {
			s.log.Error("reading a session failed", "cause", err)
		}
		return session{}, false
	}
	return sess, true
}

// browserID is a random value in its own cookie that binds the login and setup forms to the
// browser that loaded them, before there is a session (login CSRF).
func (s *server) browserID(w http.ResponseWriter, r *http.Request) []byte {
	if ck, err := r.Cookie(s.cookieName("oauthd_csrf")); err == nil && len(ck.Value) == 43 {
		return []byte(ck.Value)
	}
	v := newSecret()
	s.setCookie(w, "oauthd_csrf", v, 0)
	return []byte(v)
}

// csrfToken is the per-form token: an HMAC of the form's name and what it is bound to.
func (s *server) csrfToken(binding []byte, form string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(form))
	m.Write([]byte{0})
	m.Write(binding)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF compares the form's csrf_token with the one expected for this binding.
func (s *server) checkCSRF(r *http.Request, binding []byte, form string) bool {
	got := r.PostForm.Get("csrf_token")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrfToken(binding, form))) == 1
}

// safeNext accepts only a same-origin path as the place to return to after login.
func safeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\x00\t\r\n") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

// redirectToLogin sends the browser to the login page, to come back to next.
// hint (OIDC login_hint) prefills the username.
func (s *server) redirectToLogin(w http.ResponseWriter, r *http.Request, next, hint string) {
	v := url.Values{"next": {next}}
	if hint != "" {
		v.Set("username", hint)
	}
	http.Redirect(w, r, s.path("/login?"+v.Encode()), http.StatusFound)
}

// ---- passwords

// defaultPBKDF2Iter is the production PBKDF2-SHA256 iteration count (OWASP 2023: 600,000).
const defaultPBKDF2Iter = 600_000

// hashPassword returns pbkdf2-sha256$iterations$salt$key with a fresh 16-byte salt.
func hashPassword(password string, iter int) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		return "", err
	}
	enc := base64.RawStdEncoding
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", iter, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// checkPassword verifies password against a stored hash, in constant time.
func checkPassword(password, stored string) bool {
	parts := strings.Split(stored, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[2])
	want, err2 := enc.DecodeString(parts[3])
	if err != nil || err1 != nil || err2 != nil || iter < 1 || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, password, salt, iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// sentence turns a validation error ("the password must …") into a line for a page.
func sentence(err error) string {
	msg := err.Error()
	if msg == "" {
		return msg
	}
	return strings.ToUpper(msg[:1]) + msg[1:] + "."
}

// validPassword is the rule every new password meets.
func validPassword(p string) error {
	switch {
	case utf8.RuneCountInString(p) < 8:
		return errors.New("the password must have at least 8 characters")
	case len(p) > 1024:
		return errors.New("the password must have at most 1024 bytes")
	case !utf8.ValidString(p):
		return errors.New("the password is not valid UTF-8")
	}
	return nil
}

// validUsername is the rule for login names: 1-64 letters, digits and . _ - @.
func validUsername(n string) error {
	if n == "" || len(n) > 64 {
		return errors.New("the username must have 1 to 64 characters")
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return fmt.Errorf("the username may only contain letters, digits and . _ - @ (found %q)", c)
		}
	}
	return nil
}

// newUser makes a user record with a fresh sub and password hash.
// Validation failures are *specError, so that pages can tell them from storage faults.
func newUser(name, password string, admin bool, iter int, now time.Time) (user, error) {
	if err := validUsername(name); err != nil {
		return user{}, &specError{msg: err.Error()}
	}
	if err := validPassword(password); err != nil {
		return user{}, &specError{msg: err.Error()}
	}
	h, err := hashPassword(password, iter)
	if err != nil {
		return user{}, err
	}
	return user{Sub: uuid.NewString(), Username: name, PasswordHash: h, Admin: admin, CreatedAt: now.Unix()}, nil
}

// ---- pages

// handleHome shows who is logged in, with a logout button.
func (s *server) handleHome(w http.ResponseWriter, r *http.Request) {
	sess, _ := s.session(r)
	noApps := false
	if sess.User.Admin {
		cs, err := s.store.listClients(r.Context())
		if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		noApps = len(cs) == 0
	}
	s.render(w, http.StatusOK, "home", struct {
		pageData
		Issuer string
		NoApps bool // an administrator's first steps: "Add your first app"
	}{s.pageData(sess, "logout"), s.cfg.Issuer, noApps})
}

// loginPage is the login form's data.
type loginPage struct {
	pageData
	Next, Username, Error string
	Passkeys              bool // offer "Sign in with a passkey" (mfa.go)
}

// handleLoginPage shows the login form.
func (s *server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	bid := s.browserID(w, r)
	s.render(w, http.StatusOK, "login", loginPage{pageData: pageData{CSRF: s.csrfToken(bid, "login")},
		Next: safeNext(r.URL.Query().Get("next")), Username: r.URL.Query().Get("username"), Passkeys: s.mfa.rpOK})
}

// dummy returns a password hash to check when the username is unknown, so that a wrong
// username and a wrong password take the same time.
func (s *server) dummy() string {
	s.dummyOnce.Do(func() {
		s.dummyHash, _ = hashPassword(newSecret(), s.cfg.PasswordIter)
	})
	return s.dummyHash
}

// handleLogin checks username and password and starts a session.
func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) {
	bid := s.browserID(w, r)
	next := safeNext(r.PostForm.Get("next"))
	page := loginPage{pageData: pageData{CSRF: s.csrfToken(bid, "login")}, Next: next, Username: r.PostForm.Get("username"), Passkeys: s.mfa.rpOK}
	if !s.checkCSRF(r, bid, "login") {
		page.Error = "The form expired. Please sign in again."
		s.render(w, http.StatusForbidden, "login", page)
		return
	}
	name, password := r.PostForm.Get("username"), r.PostForm.Get("password")
	now, from, fromKey := s.now(), s.sourceAddr(r), s.sourceKey(r)
	account := strings.ToLower(name)
	// The attempt is counted before the password is hashed (a burst cannot outrun the
	// count), per source address always and per account, or, for a browser that signed in
	// as this account before, per device cookie instead (OWASP device cookies: someone
	// hammering the account does not lock its owner out).
	ukey := account
	if dev := s.deviceCookie(r, account); dev != "" {
		ukey = "device:" + dev
	}
	if d := s.guard.try(ukey, fromKey, now); d > 0 {
		w.Header().Set("Retry-After", retryAfter(d))
		page.Error = "Too many failed sign-ins for this account or from your network. Try again in " + waitText(d) + "."
		s.render(w, http.StatusTooManyRequests, "login", page)
		return
	}
	u, err := s.store.userByName(r.Context(), name)
	if err != nil && !errors.Is(err, errNotFound) {
		s.guard.undo(ukey, fromKey)
		s.serverErrorPage(w, r, err)
		return
	}
	hash := u.PasswordHash
	if err != nil {
		hash = s.dummy()
	}
	var good bool
	if !s.hashing(w, func() { good = checkPassword(password, hash) }) {
		s.guard.undo(ukey, fromKey) // not checked: not an attempt
		return
	}
	if good && err == nil && u.Disabled {
		// Only the right password learns this: it is the account's owner, who needs to know.
		s.log.Info("login refused: account disabled", "user", u.Username, "from", from)
		s.record(r, "sign-in failed", u.Username, "", "account disabled")
		page.Error = "This account is disabled. Ask your administrator to enable it."
		s.render(w, http.StatusForbidden, "login", page)
		return
	}
	if !good || err != nil {
		// Only a known username is logged: an unknown one may be a password typed in the wrong box.
		s.log.Info("login failed", "user", u.Username, "known_user", err == nil, "from", from)
		if err == nil {
			s.record(r, "sign-in failed", u.Username, "", "wrong password")
		}
		page.Error = "Incorrect username or password."
		s.render(w, http.StatusUnauthorized, "login", page)
		return
	}
	// The password was right: this attempt is taken back, earlier failures stay until the
	// second factor succeeds too.
	s.guard.undo(ukey, fromKey)
	if s.secondStep(w, r, u, next) {
		return // a second factor (or enrolling one) comes first; the account's failures stay counted until then (mfa.go)
	}
	s.guard.users.reset(ukey)
	if err := s.startSession(w, r, u); errors.Is(err, errNotFound) {
		// The password checked was replaced (a reset) or the account disabled meanwhile.
		s.log.Info("login failed: the password changed during the sign-in", "user", u.Username, "from", from)
		page.Error = "The password of this account was just changed, or the account disabled. Sign in again with the current password."
		s.render(w, http.StatusUnauthorized, "login", page)
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.setDeviceCookie(w, account, now)
	s.log.Info("login", "user", u.Username, "from", from)
	s.record(r, "sign-in", u.Username, "", "with the password")
	http.Redirect(w, r, s.path(next), http.StatusSeeOther)
}

// startSession replaces any session of the browser with a new one for u (no fixation). u is
// as read when its password was checked: errNotFound when that password is no longer the
// user's (see createSession).
func (s *server) startSession(w http.ResponseWriter, r *http.Request, u user) error {
	if old, ok := s.session(r); ok {
		s.store.deleteSession(r.Context(), old.Hash)
	}
	tok, now := newSecret(), s.now()
	if err := s.store.createSession(r.Context(), hashSecret(tok), u, now.Unix(), now.Add(s.cfg.SessionTTL).Unix(), s.sourceAddr(r), r.UserAgent()); err != nil {
		return err
	}
	s.setCookie(w, "oauthd_session", tok, int(s.cfg.SessionTTL/time.Second))
	return nil
}

// handleLogout ends the session.
func (s *server) handleLogout(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if ok {
		if !s.checkCSRF(r, sess.Hash, "logout") {
			s.errorPage(w, http.StatusForbidden, "Request refused", "The logout form is missing its security token. Go back and try again.")
			return
		}
		if err := s.store.deleteSession(r.Context(), sess.Hash); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("logout", "user", sess.User.Username)
	}
	s.setCookie(w, "oauthd_session", "", -1)
	http.Redirect(w, r, s.path("/"), http.StatusSeeOther)
}

// ---- first run

// credentialsPage is the data of the forms that create an account (first-run setup,
// invitation) or set a password (reset link).
type credentialsPage struct {
	pageData
	First                  bool // the first-run setup (an administrator)
	Token, Username, Error string
}

// checkSetupToken reports whether tok is the live one-time setup token.
func (s *server) checkSetupToken(tok string) bool {
	s.setupMu.Lock()
	defer s.setupMu.Unlock()
	return s.setupHash != nil && tok != "" && subtle.ConstantTimeCompare(hashSecret(tok), s.setupHash) == 1
}

// newSetupToken makes the one-time first-run token; it is logged once, as a URL.
func (s *server) newSetupToken() string {
	tok := newSecret()
	s.setupMu.Lock()
	s.setupHash = hashSecret(tok)
	s.setupMu.Unlock()
	return tok
}

// handleSetupPage shows the form that creates the first (admin) account.
func (s *server) handleSetupPage(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if !s.linkAllowed(w, r) {
		return
	}
	good := s.checkSetupToken(tok)
	s.linkChecked(r, good)
	if !good {
		s.errorPage(w, http.StatusForbidden, "Setup link not valid", "This setup link is wrong or was already used. Use `oauthd user add` to create accounts.")
		return
	}
	if n, err := s.store.countUsers(r.Context()); err != nil {
		s.serverErrorPage(w, r, err)
		return
	} else if n > 0 {
		s.errorPage(w, http.StatusConflict, "Already set up", "An account already exists; this setup link no longer works. Sign in instead.")
		return
	}
	bid := s.browserID(w, r)
	s.render(w, http.StatusOK, "newaccount", credentialsPage{pageData: pageData{CSRF: s.csrfToken(bid, "setup")}, First: true, Token: tok})
}

// handleSetup creates the first account, only while the database has none.
func (s *server) handleSetup(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	tok := f.Get("token")
	if !s.linkAllowed(w, r) {
		return
	}
	good := s.checkSetupToken(tok)
	s.linkChecked(r, good)
	if !good {
		s.errorPage(w, http.StatusForbidden, "Setup link not valid", "This setup link is wrong or was already used.")
		return
	}
	bid := s.browserID(w, r)
	page := credentialsPage{pageData: pageData{CSRF: s.csrfToken(bid, "setup")}, First: true, Token: tok, Username: f.Get("username")}
	if !s.checkCSRF(r, bid, "setup") {
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "newaccount", page)
		return
	}
	if f.Get("password") != f.Get("password2") {
		page.Error = "The two passwords differ."
		s.render(w, http.StatusBadRequest, "newaccount", page)
		return
	}
	var u user
	var err error
	if !s.hashing(w, func() { u, err = newUser(f.Get("username"), f.Get("password"), true, s.cfg.PasswordIter, s.now()) }) {
		return
	}
	if err != nil {
		page.Error = sentence(err)
		s.render(w, http.StatusBadRequest, "newaccount", page)
		return
	}
	err = s.store.createFirstUser(r.Context(), u)
	if errors.Is(err, errExists) {
		s.setupMu.Lock()
		s.setupHash = nil
		s.setupMu.Unlock()
		s.errorPage(w, http.StatusConflict, "Already set up", "An account already exists; this setup link no longer works.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.setupMu.Lock()
	s.setupHash = nil
	s.setupMu.Unlock()
	os.Remove(setupURLFile(s.cfg.DB))
	s.log.Info("first account created through setup", "user", u.Username)
	if u, err = s.store.userByName(r.Context(), u.Username); err == nil {
		err = s.startSession(w, r, u)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	http.Redirect(w, r, s.path("/"), http.StatusSeeOther)
}
