package main

// The OAuth 2 endpoints for people and apps (RFC 6749): secret and token values, scopes and
// the redirect URI rules (RFC 9700 exact matching, RFC 8252 §7.3 loopback ports), the
// authorization endpoint and the consent page. Wiring is in server.go, the token endpoint in
// token.go.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ---- secrets

// newSecret returns 256 bits from crypto/rand, base64url without padding (43 characters).
func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret is how every secret, token and code is stored.
func hashSecret(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// Access and refresh tokens and authorization codes begin with their issue time: 6 bytes of
// Unix milliseconds, then 256 bits from crypto/rand, base64url (51 characters, the first 8 of
// them the time). They are stored under that time followed by the SHA-256 of the whole value.
// The time is no secret (created_at holds it too) and changing it changes the hash; what it
// buys is order. Keys that were pure hashes sent every new token, and its entries in the
// grant and expiry indexes, to a random page of a large b-tree: each commit wrote one page
// per index per token, ~15 KB of write-ahead log per client_credentials token. Time-ordered
// keys append.
const (
	tokenTimeLen = 6
	tokenLen     = 51 // base64url of 6 + 32 bytes
)

// newTokenValue makes an access or refresh token, or a code, issued at now.
func newTokenValue(now time.Time) string {
	var b [tokenTimeLen + 32]byte
	ms := uint64(now.UnixMilli())
	for i := range tokenTimeLen {
		b[i] = byte(ms >> (8 * (tokenTimeLen - 1 - i)))
	}
	rand.Read(b[tokenTimeLen:])
	return b64.EncodeToString(b[:])
}

// tokenKey is the key a presented token or code is stored under: its time and its hash, or
// only its hash for the 43-character values of earlier versions (and for anything that is not
// one of ours, which then matches nothing).
func tokenKey(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	if len(tok) == tokenLen {
		var t [tokenTimeLen]byte
		if n, err := b64.Decode(t[:], []byte(tok[:8])); err == nil && n == tokenTimeLen {
			return append(t[:], h[:]...)
		}
	}
	if k, ok := jwtTokenKey(tok, h); ok { // an RFC 9068 access token (jwtat.go)
		return k
	}
	return h[:]
}

// ---- scopes and redirect URIs

// parseScope splits a scope parameter (RFC 6749 §3.3); false when a token has a character
// outside NQCHAR.
func parseScope(s string) ([]string, bool) {
	for _, c := range []byte(s) {
		if c != ' ' && (c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e) {
			return nil, false
		}
	}
	return normScopes(strings.Split(s, " ")), true
}

// normScopes sorts and de-duplicates scopes, dropping empty ones.
func normScopes(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// subset reports whether every element of a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// blockedSchemes may never be redirect targets, even for native apps.
var blockedSchemes = []string{"javascript", "data", "vbscript", "file", "about", "blob", "filesystem", "ftp", "ws", "wss", "mailto", "tel"}

// validateRedirectURI checks a redirect URI at registration: absolute, no fragment, https or
// loopback http, or (public native apps, RFC 8252 §7.1) a private-use scheme.
func validateRedirectURI(raw string, public bool) error {
	if len(raw) > 2000 {
		return errors.New("is longer than 2000 characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URI")
	}
	switch {
	case !u.IsAbs():
		return errors.New("must be an absolute URI")
	case strings.Contains(raw, "#"):
		return errors.New("must not contain a fragment (RFC 6749 §3.1.2)")
	case u.User != nil:
		return errors.New("must not contain user information")
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" || strings.Contains(u.Host, "*") {
			return errors.New("must name a host (no wildcards)")
		}
	case "http":
		if !isLoopbackHost(u.Hostname()) && u.Hostname() != "localhost" {
			return errors.New("uses http on a non-loopback host; use https (http is only for 127.0.0.1, [::1] and localhost)")
		}
	default:
		if !public {
			return fmt.Errorf("uses the private-use scheme %q, which only public native clients (-public) may register", u.Scheme)
		}
		if slices.Contains(blockedSchemes, u.Scheme) {
			return fmt.Errorf("uses the scheme %q, which is never a redirect target", u.Scheme)
		}
	}
	return nil
}

// isLoopbackHost reports whether h is a loopback IP literal (RFC 8252 §7.3 matches these on any port).
func isLoopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// matchRedirect picks the redirect URI of an authorization request: the given one when it
// equals a registered URI exactly, or differs only in the port of a loopback IP literal
// (RFC 8252 §7.3); the single registered one when none is given. given reports whether the
// request named one.
func matchRedirect(registered []string, raw string) (uri string, given, ok bool) {
	if raw == "" {
		if len(registered) == 1 {
			return registered[0], false, true
		}
		return "", false, false
	}
	if slices.Contains(registered, raw) {
		return raw, true, true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) || u.User != nil || strings.Contains(raw, "#") {
		return "", true, false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", true, false
		}
	}
	for _, r := range registered {
		ru, err := url.Parse(r)
		if err == nil && ru.Scheme == "http" && ru.Hostname() == u.Hostname() && ru.Path == u.Path &&
			ru.RawPath == u.RawPath && ru.RawQuery == u.RawQuery && !ru.ForceQuery && !u.ForceQuery {
			return raw, true, true
		}
	}
	return "", true, false
}

// redirectWith adds params to a validated redirect URI, keeping the query it already has
// (RFC 6749 §3.1.2) and dropping any fragment.
func redirectWith(base string, params url.Values) string {
	u, err := url.Parse(base)
	if err != nil {
		return base // never: every redirect URI was parsed when it was validated
	}
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery == "" {
		u.RawQuery = params.Encode()
	} else {
		u.RawQuery += "&" + params.Encode()
	}
	return u.String()
}

// ---- authorization endpoint

// authRequest is a validated authorization request, kept while the user decides.
type authRequest struct {
	ClientID      string   `json:"client_id"`
	RedirectURI   string   `json:"redirect_uri"`
	RedirectGiven bool     `json:"redirect_given"`
	Scopes        []string `json:"scopes"`
	State         string   `json:"state,omitempty"`
	CodeChallenge string   `json:"code_challenge,omitempty"`
	Nonce         string   `json:"nonce,omitempty"`
	DeviceHash    []byte   `json:"device_hash,omitempty"` // a device flow's code (RFC 8628): answer it, redirect nowhere
	Resources     []string `json:"resources,omitempty"`   // RFC 8707 resource indicators, canonical and sorted
}

// handleAuthorize is the authorization endpoint (RFC 6749 §4.1.1). client_id and redirect_uri
// are checked first and their errors shown as a page; every later error goes back to the
// client with state and iss (RFC 9207).
//
// OIDC Core §3.1.2.1: GET and POST are both accepted; a POST carries the parameters as a form
// body (and is a plain request, not a state change, so it is allowed cross-site).
func (s *server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The authorization request body could not be read.")
			return
		}
		q = r.PostForm
	}
	if len(q["client_id"]) > 1 || len(q["redirect_uri"]) > 1 {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The request repeats client_id or redirect_uri.")
		return
	}
	if q.Get("client_id") == "" {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The request has no client_id.")
		return
	}
	c, err := s.authorizeClient(r, q.Get("client_id")) // a client ID metadata document is fetched (cimd.go)
	var me *metadataError
	if errors.As(err, &me) {
		s.errorPage(w, me.status, "Application not usable", me.Error())
		return
	} else if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusBadRequest, "Unknown application", "No application is registered with this client_id.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	uri, given, ok := matchRedirect(c.RedirectURIs, q.Get("redirect_uri"))
	if !ok {
		s.redirectURIError(w, r, c, q.Get("redirect_uri"))
		return
	}
	req := authRequest{ClientID: c.ID, RedirectURI: uri, RedirectGiven: given, State: q.Get("state")}
	sess, signedIn := s.session(r)
	fail := func(code, desc string) {
		s.log.Info("authorization refused", "client_id", c.ID, "error", code, "description", desc)
		if !c.Vetted && !s.approvedBy(r, sess, signedIn, c.ID) {
			// RFC 9700 §4.11.2: a client nobody vetted could have registered any redirect URI;
			// an error redirect would bounce a visitor there, so show the error unless the
			// signed-in user already approved that client.
			s.errorPage(w, http.StatusBadRequest, "Request refused", "The application "+c.Name+" sent a request this server refuses: "+desc+" ("+code+").")
			return
		}
		http.Redirect(w, r, s.errorRedirect(req, code, desc), http.StatusFound)
	}
	for k, v := range q {
		if len(v) > 1 && k != "resource" { // RFC 8707 §2: resource may repeat
			fail(errInvalidRequest, fmt.Sprintf("the parameter %s is repeated (RFC 6749 §3.1)", k))
			return
		}
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		fail(errInvalidRequest, "response_type is required")
		return
	default:
		fail(errUnsupportedResponseType, "only response_type=code is supported")
		return
	}
	res, err := s.requestedResources(r.Context(), q["resource"]) // RFC 8707 (resources.go)
	if err != nil {
		var oe *oauthError
		if errors.As(err, &oe) {
			s.targetRefused(w, r, req, oe, slices.Contains(strings.Fields(q.Get("prompt")), "none"))
		} else {
			s.serverErrorPage(w, r, err)
		}
		return
	}
	req.Resources = strings.Fields(resourceURIs(res))
	if _, ok := q["scope"]; ok {
		scopes, ok := parseScope(q.Get("scope"))
		if !ok {
			fail(errInvalidScope, "scope has characters outside RFC 6749 §3.3")
			return
		}
		allowed := func(s string) bool {
			return slices.Contains(c.Scopes, s) || slices.Contains(builtinScopes, s) || resourceScope(res, s)
		}
		if bad := slices.DeleteFunc(slices.Clone(scopes), allowed); len(bad) > 0 {
			fail(errInvalidScope, "scope not allowed for this client: "+strings.Join(bad, " "))
			return
		}
		req.Scopes = scopes
	} else {
		// RFC 6749 §3.3: without a scope parameter the client's registered scopes apply, and
		// those of the resources asked for.
		req.Scopes = normScopes(append(slices.Clone(c.Scopes), resourceScopes(res)...))
	}
	// RFC 7636 / RFC 9700 §2.1.1: PKCE with S256 only; required for public clients.
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		fail(errInvalidRequest, "code_challenge_method without code_challenge")
		return
	case challenge == "" && c.Public:
		fail(errInvalidRequest, "public clients must use PKCE: code_challenge and code_challenge_method=S256 are required")
		return
	case challenge != "" && method != "S256":
		fail(errInvalidRequest, "code_challenge_method must be S256 (plain is not supported)")
		return
	case challenge != "" && !validChallenge(challenge):
		fail(errInvalidRequest, "code_challenge must be the 43-character base64url S256 hash of the code_verifier")
		return
	}
	req.CodeChallenge = challenge
	req.Nonce = q.Get("nonce")
	// OIDC Core §6: request objects are not supported.
	if q.Has("request") {
		fail("request_not_supported", "request objects are not supported")
		return
	}
	if q.Has("request_uri") {
		fail("request_uri_not_supported", "request_uri is not supported")
		return
	}
	maxAge := int64(-1)
	if v := q.Get("max_age"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			fail(errInvalidRequest, "max_age must be a non-negative number of seconds")
			return
		}
		maxAge = n
	}
	prompt := strings.Fields(q.Get("prompt"))
	for _, p := range prompt {
		if !slices.Contains([]string{"none", "login", "consent", "select_account"}, p) {
			fail(errInvalidRequest, "unknown prompt value "+p)
			return
		}
	}
	if slices.Contains(prompt, "none") && len(prompt) > 1 {
		fail(errInvalidRequest, "prompt=none cannot be combined with other values")
		return
	}
	ok = signedIn
	// OIDC Core §3.1.2.1: max_age asks for a login no older than that many seconds.
	stale := ok && maxAge >= 0 && s.now().Unix()-sess.AuthTime > maxAge
	if !ok || stale || slices.Contains(prompt, "login") {
		if slices.Contains(prompt, "none") {
			fail(errLoginRequired, "the user is not logged in")
			return
		}
		// Authenticate, then come back to this request without prompt=login (or it would loop).
		next := r.URL.RequestURI()
		if slices.Contains(prompt, "login") || r.Method == http.MethodPost {
			q.Set("prompt", strings.Join(slices.DeleteFunc(prompt, func(p string) bool { return p == "login" }), " "))
			if q.Get("prompt") == "" {
				q.Del("prompt")
			}
			next = r.URL.Path + "?" + q.Encode() // a POSTed request comes back as a GET
		}
		s.redirectToLogin(w, r, next, q.Get("login_hint"))
		return
	}
	// The client, acr_values or -mfa may need two factors where this session proved one (mfa.go).
	if s.needsMFA(sess.User, c, q.Get("acr_values")) && !amrHas(sess.AMR, "mfa") {
		if slices.Contains(prompt, "none") {
			fail(errLoginRequired, "this request needs a second factor, which needs the user")
			return
		}
		s.stepUp(w, r, sess, r.URL.Path+"?"+q.Encode())
		return
	}
	// Per-app access (groups.go): an outsider gets no consent, code or token.
	if slices.Contains(prompt, "none") && len(c.AllowGroups) > 0 {
		if ok, err := s.mayUse(r.Context(), sess.User, c); err != nil {
			s.serverErrorPage(w, r, err)
			return
		} else if !ok {
			fail(errAccessDenied, "the user is not in any group allowed to use this application")
			return
		}
	}
	if s.refuseOutsider(w, r, c, req, sess) {
		return
	}
	approved, err := s.store.consentScopes(r.Context(), sess.User.ID, c.ID)
	if err != nil && !errors.Is(err, errNotFound) {
		s.serverErrorPage(w, r, err)
		return
	}
	known := err == nil && subset(req.Scopes, approved)
	if known && len(req.Resources) > 0 {
		ar, err := s.store.consentResources(r.Context(), sess.User.ID, c.ID)
		if err != nil && !errors.Is(err, errNotFound) {
			s.serverErrorPage(w, r, err)
			return
		}
		known = subset(req.Resources, ar)
	}
	if known && !slices.Contains(prompt, "consent") {
		s.issueCode(w, r, req, sess, nil, http.StatusFound)
		return
	}
	if slices.Contains(prompt, "none") {
		fail(errConsentRequired, "the user has not approved this request")
		return
	}
	s.showConsent(w, r, c, req, sess)
}

// redirectURIPage explains an unregistered redirect_uri: what arrived, the usual causes, and
// (to the app's owner or an administrator) what is registered.
type redirectURIPage struct {
	pageData
	Client     client
	Received   string
	Registered []string // shown to the owner or an administrator only
}

// redirectURIError shows why a redirect_uri was refused (never redirecting to it) and logs
// the client and the URI received.
func (s *server) redirectURIError(w http.ResponseWriter, r *http.Request, c client, got string) {
	s.log.Info("authorization refused: redirect_uri not registered", "client_id", c.ID, "redirect_uri", got)
	sess, _ := s.session(r)
	page := redirectURIPage{pageData: s.pageData(sess, ""), Client: c, Received: got}
	if sess.User.Admin || (sess.User.ID != 0 && sess.User.ID == c.OwnerID) {
		page.Registered = c.RedirectURIs
	}
	s.render(w, http.StatusBadRequest, "redirect_error", page)
}

// approvedBy reports whether the signed-in user has approved the client before (a consent
// is remembered): only then may an error about an unvetted client go back to it.
func (s *server) approvedBy(r *http.Request, sess session, signedIn bool, clientID string) bool {
	if !signedIn {
		return false
	}
	_, err := s.store.consentScopes(r.Context(), sess.User.ID, clientID)
	return err == nil
}

// validChallenge checks the form of an S256 code_challenge (RFC 7636 §4.2).
func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil
}

// errorRedirect is the RFC 6749 §4.1.2.1 error response with RFC 9207 iss.
func (s *server) errorRedirect(req authRequest, code, desc string) string {
	v := url.Values{"error": {code}, "error_description": {desc}, "iss": {s.cfg.Issuer}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	return redirectWith(req.RedirectURI, v)
}

// issueCode stores a new code (and the consent just given, if any) and sends the browser back
// to the client with code, state and iss (RFC 6749 §4.1.2, RFC 9207).
func (s *server) issueCode(w http.ResponseWriter, r *http.Request, req authRequest, sess session, consent []string, status int) {
	now := s.now()
	code := newTokenValue(now) // time-ordered like tokens: codes append to their table too
	err := s.store.issueCode(r.Context(), tokenKey(code), authCode{
		ClientID: req.ClientID, UserID: sess.User.ID, RedirectURI: req.RedirectURI, RedirectGiven: req.RedirectGiven,
		Scope: strings.Join(req.Scopes, " "), CodeChallenge: req.CodeChallenge, Nonce: req.Nonce,
		AuthTime: sess.AuthTime, AMR: sess.AMR, ExpiresAt: now.Add(s.cfg.CodeTTL).Unix(), Resource: strings.Join(req.Resources, " "),
	}, sess.Hash, consent, now.Unix())
	switch {
	case errors.Is(err, errSessionEnded):
		s.errorPage(w, http.StatusForbidden, "Session ended", "You were signed out (or your password was changed) before this was recorded. Start again from the application.")
		return
	case errors.Is(err, errConsentWithdrawn):
		s.log.Info("authorization refused: the consent was withdrawn meanwhile", "client_id", req.ClientID, "user", sess.User.Username)
		http.Redirect(w, r, s.errorRedirect(req, errConsentRequired, "the user withdrew their approval of this application; ask again"), status)
		return
	}
	if err != nil {
		s.log.Error("storing an authorization code failed", "client_id", req.ClientID, "cause", err)
		http.Redirect(w, r, s.errorRedirect(req, errTemporarilyUnavailable, "the server could not store the authorization; try again shortly"), status)
		return
	}
	s.log.Info("authorization code issued", "client_id", req.ClientID, "user", sess.User.Username, "scope", strings.Join(req.Scopes, " "))
	v := url.Values{"code": {code}, "iss": {s.cfg.Issuer}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	http.Redirect(w, r, redirectWith(req.RedirectURI, v), status)
}

// scopeWords are the consent page's descriptions of well-known scopes.
var scopeWords = map[string]string{
	"read":           "Read your data",
	"write":          "Create and change your data",
	"openid":         "Sign you in with your account",
	"profile":        "See your name and username",
	"email":          "See your email address",
	"offline_access": "Keep access while you are not using it",
	"groups":         "See which groups you belong to",
}

// consentOrder lists scopes as the consent page shows them: openid (who you are) first,
// offline_access (access while you are away) last, the others in between as asked.
func consentOrder(scopes []string) []string {
	rank := func(sc string) int {
		switch sc {
		case "openid":
			return 0
		case "offline_access":
			return 2
		}
		return 1
	}
	out := slices.Clone(scopes)
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}

// showConsent renders the consent page for a validated request. The request is kept
// server-side, bound to this session, under a random token the form carries: a forged or
// replayed POST finds nothing.
func (s *server) showConsent(w http.ResponseWriter, r *http.Request, c client, req authRequest, sess session) {
	tok := newSecret()
	if err := s.store.createPending(r.Context(), hashSecret(tok), sess.Hash, req, s.now().Add(10*time.Minute).Unix()); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	type scopeLine struct{ Name, Words string }
	var lines []scopeLine
	for _, sc := range consentOrder(req.Scopes) {
		lines = append(lines, scopeLine{sc, scopeWords[sc]})
	}
	host := req.RedirectURI // a private-use scheme URI has no host: show it whole
	if u, err := url.Parse(req.RedirectURI); err == nil && u.Host != "" {
		host = u.Host
	}
	s.render(w, http.StatusOK, "consent", struct {
		pageData
		Client       client
		RedirectHost string
		Scopes       []scopeLine
		Request      string
		Resources    []resourceLine // "Notes MCP at mcp.example.com" (resources.go)
		DocumentHost string         // the host of a client ID metadata document (cimd.go)
	}{s.pageData(sess, "consent"), c, host, lines, tok, s.consentResourceLines(r.Context(), req.Resources), metadataHost(c.ID)})
}

// stillRegistered checks, when the user answers a consent page, that the client still exists
// and still has the redirect URI the request was validated against: the page may have been
// open for ten minutes, during which an administrator or the client's owner may have deleted
// the client or removed a URI (a compromised one, say). Otherwise the answer is an error page
// and nothing is sent anywhere.
func (s *server) stillRegistered(w http.ResponseWriter, r *http.Request, req authRequest) bool {
	c, err := s.store.lookupClient(r.Context(), req.ClientID)
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusBadRequest, "Unknown application", "This application was removed while the page was open.")
		return false
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return false
	}
	if _, _, ok := matchRedirect(c.RedirectURIs, req.RedirectURI); !ok {
		s.log.Info("consent refused: the redirect URI was unregistered while the page was open", "client_id", c.ID)
		s.errorPage(w, http.StatusBadRequest, "Invalid redirect URI", "The application's redirect URI changed while the page was open. Start again from the application.")
		return false
	}
	return true
}

// handleConsent takes the user's decision from the consent page.
func (s *server) handleConsent(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if !ok {
		s.errorPage(w, http.StatusForbidden, "Session ended", "You are no longer logged in. Start again from the application.")
		return
	}
	if !s.checkCSRF(r, sess.Hash, "consent") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form is missing its security token or it has expired. Start again from the application.")
		return
	}
	decision := r.PostForm.Get("decision")
	if decision != "allow" && decision != "deny" {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The decision must be allow or deny.")
		return
	}
	req, err := s.store.takePending(r.Context(), hashSecret(r.PostForm.Get("request")), sess.Hash, s.now().Unix())
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusBadRequest, "Request expired", "This authorization request has expired or was already answered. Start again from the application.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	if req.DeviceHash == nil && !s.stillRegistered(w, r, req) {
		return
	}
	if decision == "allow" {
		// The user may have left the app's groups since the page was shown.
		c, err := s.store.lookupClient(r.Context(), req.ClientID)
		if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		if s.refuseOutsider(w, r, c, req, sess) {
			return
		}
	}
	if req.DeviceHash != nil {
		err := s.store.decideDevice(r.Context(), req.DeviceHash, sess.Hash, sess.User.ID, sess.AuthTime, sess.AMR, decision == "allow", req.Scopes, req.Resources, s.now().Unix())
		if errors.Is(err, errSessionEnded) {
			s.errorPage(w, http.StatusForbidden, "Session ended", "You were signed out (or your password was changed) before this was recorded. Start again on the device.")
			return
		} else if errors.Is(err, errNotFound) {
			s.errorPage(w, http.StatusBadRequest, "Code expired", "The code from your device expired or was already used. Start again on the device.")
			return
		} else if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("device authorization answered", "client_id", req.ClientID, "user", sess.User.Username, "decision", decision)
		s.record(r, "consent", sess.User.Username, req.ClientID, decision+" (device)")
		title, msg := "Device connected", "You can return to your device; it will continue by itself."
		if decision == "deny" {
			title, msg = "Request denied", "The device was not given access. You can close this page."
		}
		s.render(w, http.StatusOK, "message", messagePage{Title: title, Message: msg})
		return
	}
	if decision == "deny" {
		s.log.Info("authorization denied by the user", "client_id", req.ClientID, "user", sess.User.Username)
		s.record(r, "consent", sess.User.Username, req.ClientID, "deny")
		http.Redirect(w, r, s.errorRedirect(req, errAccessDenied, "the user denied the request"), http.StatusSeeOther)
		return
	}
	s.record(r, "consent", sess.User.Username, req.ClientID, "allow: "+strings.Join(req.Scopes, " "))
	s.issueCode(w, r, req, sess, req.Scopes, http.StatusSeeOther)
}
