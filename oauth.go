package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is everything the server is told by flags.
type config struct {
	Addr          string        // listen address
	DB            string        // path of the SQLite database
	Issuer        string        // exact issuer identifier (no trailing slash)
	LogLevel      string        // debug, info, warn or error
	TokenTTL      time.Duration // access token lifetime (expires_in)
	RefreshTTL    time.Duration // refresh token lifetime
	RefreshGrace  time.Duration // how long a rotated refresh token still returns its successor
	CodeTTL       time.Duration // authorization code lifetime
	SessionTTL    time.Duration // browser session lifetime
	PurgeInterval time.Duration // how often expired rows are deleted
	PasswordIter  int           // PBKDF2 iterations for new password hashes
	Registration  string        // dynamic client registration: off, token or open
	LogFormat     string        // text or json
	TrustedProxy  string        // comma-separated CIDRs whose X-Forwarded-For is believed
	AllowNetFS    bool          // serve a database on NFS/SMB/CIFS anyway

	ClientMetadataDocuments    bool          // accept client ID metadata documents (cimd.go)
	AllowPrivateClientMetadata bool          // fetch them from loopback and private addresses too (tests, labs)
	MetadataTLS                *tls.Config   // TLS of those fetches; nil: the system's roots (tests set their CA)
	MetadataTimeout            time.Duration // bound on one fetch; 0: 5 s

	KeyGen func(alg string) (crypto.Signer, error) // makes signing keys; nil means generateKey
	FSType func(dir string) (int64, error)         // statfs f_type of a directory; nil means statfsType
}

// defaultConfig holds the production defaults.
func defaultConfig() config {
	return config{
		Addr:          "127.0.0.1:8080",
		DB:            "oauthd.db",
		LogLevel:      "info",
		TokenTTL:      time.Hour,
		RefreshTTL:    30 * 24 * time.Hour,
		RefreshGrace:  10 * time.Second,
		CodeTTL:       60 * time.Second,
		SessionTTL:    24 * time.Hour,
		PurgeInterval: time.Minute,
		PasswordIter:  defaultPBKDF2Iter,
		Registration:  registrationToken,
		LogFormat:     "text",

		ClientMetadataDocuments: true,
	}
}

// server is the authorization server: its store, pages, clock and configuration.
type server struct {
	cfg     config
	store   *store
	log     *slog.Logger
	now     func() time.Time
	pages   map[string]*template.Template // page name -> base layout + page
	csrfKey []byte                        // HMAC key of the per-form CSRF tokens
	cop     *http.CrossOriginProtection
	secure  bool   // issuer is https: Secure and __Host- cookies
	prefix  string // the issuer's path ("/auth"), "" at the root of its host (prefix.go)

	setupMu   sync.Mutex
	setupHash []byte // SHA-256 of the one-time first-run setup token; nil when none

	keys          keyring  // parsed signing keys by kid
	deviceTries   *limiter // failed user-code entries per user
	registrations *limiter // open dynamic registrations per source address
	guard         guards   // brute-force backoff and the password-hashing bound

	hostWarned atomic.Bool // a request arrived for another host than the issuer's (warned once)

	cimd *cimd // client ID metadata documents: fetcher and cache (cimd.go)

	dummyOnce sync.Once
	dummyHash string // a password hash checked for unknown users, so failures cost the same
}

// newServer builds a server over an open store.
func newServer(ctx context.Context, cfg config, st *store, log *slog.Logger) (*server, error) {
	iss, err := normalizeIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	cfg.Issuer = iss
	proxies, err := parseProxies(cfg.TrustedProxy)
	if err != nil {
		return nil, fmt.Errorf("-trusted-proxy: %w", err)
	}
	key, err := st.secretSetting(ctx, "csrf_key")
	if err != nil {
		return nil, err
	}
	s := &server{
		cfg:     cfg,
		store:   st,
		log:     log,
		now:     time.Now,
		pages:   parsePages(issuerPath(iss)),
		csrfKey: key,
		cop:     http.NewCrossOriginProtection(),
		secure:  strings.HasPrefix(iss, "https://"),
		prefix:  issuerPath(iss),

		deviceTries:   newLimiter(5, 15*time.Minute),
		registrations: newLimiter(20, time.Hour),
		guard:         newGuards(proxies),
		cimd:          newCIMD(cfg),
	}
	gen := cfg.KeyGen
	if gen == nil {
		gen = generateKey
	}
	if err := st.ensureKeys(ctx, gen, s.now().Unix()); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	s.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, http.StatusForbidden, "Request refused", "This form was sent from another site. Go back to the page and try again.")
	}))
	return s, nil
}

// normalizeIssuer checks the issuer identifier (RFC 8414 §2: https URL, no query or
// fragment) and drops a trailing slash so that `iss` is the same string everywhere.
func normalizeIssuer(iss string) (string, error) {
	u, err := url.Parse(iss)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not an http(s) URL", iss)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("issuer %q must not have a query, fragment or user info", iss)
	}
	path := strings.TrimSuffix(u.Path, "/")
	if err := validIssuerPath(path); err != nil {
		return "", fmt.Errorf("issuer %q: %v", iss, err)
	}
	return u.Scheme + "://" + u.Host + path, nil
}

// routes is every URL the server answers.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	// RFC 6749 protocol endpoints, at the MediaGoblin plugin's paths.
	mux.HandleFunc("GET /oauth/authorize", s.handleAuthorize)
	mux.HandleFunc("POST /oauth/authorize", s.handleAuthorize)
	mux.Handle("POST /oauth/consent", s.form(s.handleConsent))
	mux.HandleFunc("POST /oauth/access_token", cors(s.handleToken))
	mux.HandleFunc("POST /oauth/token", cors(s.handleToken))
	mux.HandleFunc("GET /oauth/access_token", s.handleTokenGet)
	mux.HandleFunc("GET /oauth/token", s.handleTokenGet)
	mux.HandleFunc("POST /oauth/introspect", s.handleIntrospect)
	mux.HandleFunc("POST /oauth/revoke", cors(s.handleRevoke))
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", cors(s.handleMetadata))
	// OpenID Connect.
	mux.HandleFunc("GET /.well-known/openid-configuration", cors(s.handleMetadata))
	mux.HandleFunc("GET /oauth/jwks", cors(s.handleJWKS))
	mux.HandleFunc("GET /oauth/userinfo", cors(s.handleUserinfo))
	mux.HandleFunc("POST /oauth/userinfo", cors(s.handleUserinfo))
	mux.HandleFunc("GET /oauth/logout", s.handleEndSession)
	mux.HandleFunc("POST /oauth/logout", s.handleEndSession)
	for _, p := range []string{"/oauth/access_token", "/oauth/token", "/oauth/revoke", "/oauth/userinfo", "/oauth/jwks", "/oauth/register",
		"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/oauth/register/{id}"} {
		mux.HandleFunc("OPTIONS "+p, handlePreflight)
	}
	// Pages for people.
	mux.HandleFunc("GET /{$}", s.handleHome)
	mux.HandleFunc("GET /login", s.handleLoginPage)
	mux.Handle("POST /login", s.form(s.handleLogin))
	mux.Handle("POST /logout", s.form(s.handleLogout))
	mux.HandleFunc("GET /setup", s.handleSetupPage)
	mux.Handle("POST /setup", s.form(s.handleSetup))
	mux.HandleFunc("POST /oauth/register", cors(s.handleRegister))
	mux.HandleFunc("GET /oauth/register/{id}", cors(s.handleRegistrationGet))
	mux.HandleFunc("PUT /oauth/register/{id}", cors(s.handleRegistrationPut))
	mux.HandleFunc("DELETE /oauth/register/{id}", cors(s.handleRegistrationDelete))
	mux.HandleFunc("POST /oauth/device_authorization", s.handleDeviceAuthorization)
	mux.HandleFunc("GET /device", s.handleDevicePage)
	mux.Handle("POST /device", s.form(s.handleDevice))
	mux.HandleFunc("GET /account", s.handleAccountPage)
	mux.Handle("POST /account", s.form(s.handleAccount))
	mux.HandleFunc("GET /static/{name}", s.handleStatic)
	// Client pages, connections, administration.
	mux.HandleFunc("GET /oauth/client/register", s.handleClientRegisterPage)
	mux.Handle("POST /oauth/client/register", s.form(s.handleClientRegister))
	mux.HandleFunc("GET /oauth/client/list", s.handleClientList)
	mux.HandleFunc("GET /oauth/client/{id}/edit", s.handleClientEditPage)
	mux.Handle("POST /oauth/client/{id}/edit", s.form(s.handleClientEdit))
	mux.Handle("POST /oauth/client/{id}/rotate", s.form(s.handleClientRotate))
	mux.HandleFunc("GET /oauth/client/{id}/delete", s.handleClientDeletePage)
	mux.Handle("POST /oauth/client/{id}/delete", s.form(s.handleClientDelete))
	mux.HandleFunc("GET /oauth/client/connections", s.handleConnections)
	mux.Handle("POST /oauth/client/connections/{id}/revoke", s.form(s.handleConnectionRevoke))
	mux.HandleFunc("GET /admin/users", s.handleAdminUsers)
	mux.Handle("POST /admin/users", s.form(s.handleAdminAddUser))
	mux.Handle("POST /admin/users/invite", s.form(s.handleAdminInvite))
	mux.Handle("POST /admin/users/{name}/{action}", s.form(s.handleAdminUserAction))
	mux.HandleFunc("GET /admin/resources", s.handleAdminResources)
	mux.Handle("POST /admin/resources", s.form(s.handleAdminAddResource))
	mux.Handle("POST /admin/resources/delete", s.form(s.handleAdminDeleteResource))
	mux.HandleFunc("GET /invite", s.handleInvitePage)
	mux.Handle("POST /invite", s.form(s.handleInvite))
	mux.HandleFunc("GET /reset", s.handleResetPage)
	mux.Handle("POST /reset", s.form(s.handleReset))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	return s.headers(s.watchHost(s.logRefusals(http.MaxBytesHandler(s.underPrefix(mux), maxBody))))
}

// maxBody bounds every request body.
const maxBody = 64 << 10

// ---- errors

// RFC 6749 §4.1.2.1 and §5.2 error codes (and RFC 7009 §2.2.1, OIDC Core §3.1.2.6).
const (
	errInvalidRequest          = "invalid_request"
	errInvalidClient           = "invalid_client"
	errInvalidGrant            = "invalid_grant"
	errUnauthorizedClient      = "unauthorized_client"
	errUnsupportedGrantType    = "unsupported_grant_type"
	errUnsupportedResponseType = "unsupported_response_type"
	errInvalidScope            = "invalid_scope"
	errAccessDenied            = "access_denied"
	errServerError             = "server_error"
	errTemporarilyUnavailable  = "temporarily_unavailable"
	errLoginRequired           = "login_required"
	errConsentRequired         = "consent_required"
)

// oauthError is a protocol error: the client sees Code and Description; the log gets cause.
type oauthError struct {
	Code        string
	Description string
	Status      int
	cause       error
	retryAfter  string // Retry-After seconds of a 429
}

func (e *oauthError) Error() string {
	if e.cause != nil {
		return e.Code + ": " + e.Description + ": " + e.cause.Error()
	}
	return e.Code + ": " + e.Description
}

func (e *oauthError) Unwrap() error { return e.cause }

// oerr makes an oauthError with the RFC 6749 §5.2 status for its code.
func oerr(code, format string, args ...any) *oauthError {
	status := http.StatusBadRequest
	switch code {
	case errInvalidClient:
		status = http.StatusUnauthorized
	case errServerError:
		status = http.StatusInternalServerError
	}
	return &oauthError{Code: code, Description: fmt.Sprintf(format, args...), Status: status}
}

// writeJSON answers v as JSON, never cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	writeJSONBody(w, status, b)
}

// writeJSONBody answers b, a JSON value, the way writeJSON does.
func writeJSONBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// logIssued logs the "tokens issued" line of a grant (user_id only when there is a user). It is
// on every token request, so it builds the record itself: slog.Logger.Info boxes each
// argument and walks the stack for a source position that no handler here prints (a few
// per cent of a client_credentials request's CPU).
func (s *server) logIssued(r *http.Request, grantType, clientID string, userID int64, scope string) {
	h := s.log.Handler()
	if !h.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "tokens issued", 0)
	rec.AddAttrs(slog.String("grant_type", grantType), slog.String("client_id", clientID))
	if userID != 0 {
		rec.AddAttrs(slog.Int64("user_id", userID))
	}
	rec.AddAttrs(slog.String("scope", scope))
	h.Handle(r.Context(), rec)
}

// writeError answers an error as RFC 6749 §5.2 JSON; anything that is not an oauthError is a
// server fault, logged with its cause and answered without it.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		// A storage fault (disk, lock, failed commit): nothing was acknowledged; try again.
		oe = &oauthError{Code: errTemporarilyUnavailable, Description: "the server could not complete the request; try again shortly",
			Status: http.StatusServiceUnavailable, cause: err}
	}
	level := slog.LevelInfo
	if oe.Status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request refused", "path", r.URL.Path, "error", oe.Code, "description", oe.Description, "cause", errString(oe.cause))
	if oe.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthd", charset="UTF-8"`)
	}
	if oe.retryAfter != "" {
		w.Header().Set("Retry-After", oe.retryAfter)
	}
	writeJSON(w, oe.Status, map[string]string{"error": oe.Code, "error_description": oe.Description})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

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
		msg := "The redirect_uri is not registered for this application."
		if q.Get("redirect_uri") == "" {
			msg = "The application has several redirect URIs registered, so the request must name one."
		}
		s.errorPage(w, http.StatusBadRequest, "Invalid redirect URI", msg)
		return
	}
	req := authRequest{ClientID: c.ID, RedirectURI: uri, RedirectGiven: given, State: q.Get("state")}
	fail := func(code, desc string) {
		s.log.Info("authorization refused", "client_id", c.ID, "error", code, "description", desc)
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
	sess, ok := s.session(r)
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
		AuthTime: sess.AuthTime, ExpiresAt: now.Add(s.cfg.CodeTTL).Unix(), Resource: strings.Join(req.Resources, " "),
	}, consent, now.Unix())
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
	for _, sc := range req.Scopes {
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
	if req.DeviceHash != nil {
		err := s.store.decideDevice(r.Context(), req.DeviceHash, sess.User.ID, sess.AuthTime, decision == "allow", req.Scopes, req.Resources, s.now().Unix())
		if errors.Is(err, errNotFound) {
			s.errorPage(w, http.StatusBadRequest, "Code expired", "The code from your device expired or was already used. Start again on the device.")
			return
		} else if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("device authorization answered", "client_id", req.ClientID, "user", sess.User.Username, "decision", decision)
		title, msg := "Device connected", "You can return to your device; it will continue by itself."
		if decision == "deny" {
			title, msg = "Request denied", "The device was not given access. You can close this page."
		}
		s.render(w, http.StatusOK, "message", messagePage{Title: title, Message: msg})
		return
	}
	if decision == "deny" {
		s.log.Info("authorization denied by the user", "client_id", req.ClientID, "user", sess.User.Username)
		http.Redirect(w, r, s.errorRedirect(req, errAccessDenied, "the user denied the request"), http.StatusSeeOther)
		return
	}
	s.issueCode(w, r, req, sess, req.Scopes, http.StatusSeeOther)
}
