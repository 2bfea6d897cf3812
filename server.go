package main

// Server wiring: the configuration, the server struct and its construction, every route in
// routes(), and the shared response helpers (the RFC 6749 error type, JSON answers, the
// "tokens issued" log line). The OAuth endpoints themselves are in oauth.go.

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is everything the server is told by flags.
type config struct {
	Addr               string        // listen address
	DB                 string        // path of the SQLite database
	Issuer             string        // exact issuer identifier (no trailing slash)
	LogLevel           string        // debug, info, warn or error
	TokenTTL           time.Duration // access token lifetime (expires_in)
	RefreshTTL         time.Duration // refresh token lifetime
	RefreshGrace       time.Duration // how long a rotated refresh token still returns its successor
	CodeTTL            time.Duration // authorization code lifetime
	SessionTTL         time.Duration // browser session lifetime
	PurgeInterval      time.Duration // how often expired rows are deleted
	PasswordIter       int           // PBKDF2 iterations for new password hashes
	Registration       string        // dynamic client registration: off, token or open
	RegistrationScopes string        // space-separated scopes any dynamically registered client may have
	LogFormat          string        // text or json
	TrustedProxy       string        // comma-separated CIDRs whose X-Forwarded-For is believed
	AllowNetFS         bool          // serve a database on NFS/SMB/CIFS anyway
	UserApps           bool          // signed-in users may register their own apps (-user-apps)
	SMTP               string        // smtp://USER@HOST:587 or smtps://USER@HOST:465; "" sends no mail
	SMTPPassword       string        // from OAUTHD_SMTP_PASSWORD only
	MailFrom           string        // the sender of mail (-mail-from)
	Name               string        // the instance's name on every page and in mail (-name)
	Logo               string        // path of a PNG or SVG logo shown on every page (-logo)
	EventRetention     time.Duration // how long the activity log keeps events (-event-retention)
	MFA                string        // second factors: off, optional, required or admins (mfa.go)

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
		Addr:           "127.0.0.1:8080",
		DB:             "oauthd.db",
		LogLevel:       "info",
		TokenTTL:       time.Hour,
		RefreshTTL:     30 * 24 * time.Hour,
		RefreshGrace:   10 * time.Second,
		CodeTTL:        60 * time.Second,
		SessionTTL:     24 * time.Hour,
		PurgeInterval:  time.Minute,
		PasswordIter:   defaultPBKDF2Iter,
		Registration:   registrationToken,
		LogFormat:      "text",
		UserApps:       true,
		EventRetention: 30 * 24 * time.Hour,
		MFA:            mfaOptional,

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
	logo    *siteLogo                     // -logo; nil without
	mail    *mailer                       // -smtp; nil without
	outbox  chan outMail                  // mail waiting to be sent (mailpages.go)
	csrfKey []byte                        // HMAC key of the per-form CSRF tokens
	cop     *http.CrossOriginProtection
	secure  bool   // issuer is https: Secure and __Host- cookies
	prefix  string // the issuer's path ("/auth"), "" at the root of its host (prefix.go)

	setupMu   sync.Mutex
	setupHash []byte // SHA-256 of the one-time first-run setup token; nil when none

	keys           keyring  // parsed signing keys by kid
	deviceTries    *limiter // failed user-code entries per user
	deviceStarts   *limiter // device authorizations per source address (IPv6: per /64)
	forgotAddrs    *limiter // "forgot password" requests per source address
	forgotAccounts *limiter // "forgot password" requests per account named
	registrations  *limiter // open dynamic registrations per source address
	guard          guards   // brute-force backoff and the password-hashing bound
	mfa            mfaState // passkeys and TOTP (mfa.go)

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
	logo, err := loadLogo(cfg.Logo)
	if err != nil {
		return nil, err
	}
	var mail *mailer
	if cfg.SMTP != "" {
		if mail, err = parseMailer(cfg.SMTP, cfg.SMTPPassword, cfg.MailFrom); err != nil {
			return nil, fmt.Errorf("-smtp: %w", err)
		}
	}
	if cfg.Name == "" {
		cfg.Name = "oauthd"
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
		pages:   parsePages(cfg.Name, logo.url(), issuerPath(iss)),
		logo:    logo,
		mail:    mail,
		csrfKey: key,
		cop:     http.NewCrossOriginProtection(),
		secure:  strings.HasPrefix(iss, "https://"),
		prefix:  issuerPath(iss),

		deviceTries:    newLimiter(5, 15*time.Minute),
		deviceStarts:   newLimiter(30, deviceCodeTTL),
		forgotAddrs:    newLimiter(10, time.Hour),
		forgotAccounts: newLimiter(3, time.Hour),
		registrations:  newLimiter(20, time.Hour),
		guard:          newGuards(proxies),
		mfa:            newMFAState(cfg, key),
		cimd:           newCIMD(cfg),
	}
	gen := cfg.KeyGen
	if gen == nil {
		gen = generateKey
	}
	if err := st.ensureKeys(ctx, gen, s.now().Unix()); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	s.startMailer(ctx)
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
	mux.Handle("POST /account/password", s.form(s.handleAccountPassword))
	mux.Handle("POST /account/sessions", s.form(s.handleAccountSessions))
	mux.HandleFunc("GET /static/logo", s.handleLogo)
	mux.HandleFunc("GET /static/{name}", s.handleStatic)
	mux.HandleFunc("GET /favicon.ico", s.handleFavicon)
	// Client pages, connections, administration.
	mux.HandleFunc("GET /oauth/client/register", s.handleClientRegisterPage)
	mux.Handle("POST /oauth/client/register", s.form(s.handleClientRegister))
	mux.HandleFunc("GET /oauth/client/list", s.handleClientList)
	mux.HandleFunc("GET /oauth/client/{id}/edit", s.handleClientEditPage)
	mux.Handle("POST /oauth/client/{id}/edit", s.form(s.handleClientEdit))
	mux.HandleFunc("GET /oauth/client/{id}/rotate", s.handleClientRotatePage)
	mux.Handle("POST /oauth/client/{id}/rotate", s.form(s.handleClientRotate))
	mux.HandleFunc("GET /oauth/client/{id}/delete", s.handleClientDeletePage)
	mux.Handle("POST /oauth/client/{id}/delete", s.form(s.handleClientDelete))
	mux.HandleFunc("GET /oauth/client/connections", s.handleConnections)
	mux.HandleFunc("GET /oauth/client/connections/{id}/revoke", s.handleConnectionRevokePage)
	mux.Handle("POST /oauth/client/connections/{id}/revoke", s.form(s.handleConnectionRevoke))
	mux.HandleFunc("GET /admin/users", s.handleAdminUsers)
	mux.Handle("POST /admin/users", s.form(s.handleAdminAddUser))
	mux.Handle("POST /admin/users/invite", s.form(s.handleAdminInvite))
	mux.HandleFunc("GET /admin/users/{name}/disable", s.handleAdminDisablePage)
	mux.Handle("POST /admin/users/{name}/{action}", s.form(s.handleAdminUserAction))
	mux.HandleFunc("GET /admin/resources", s.handleAdminResources)
	mux.Handle("POST /admin/resources", s.form(s.handleAdminAddResource))
	mux.HandleFunc("GET /admin/resources/delete", s.handleAdminDeleteResourcePage)
	mux.Handle("POST /admin/resources/delete", s.form(s.handleAdminDeleteResource))
	mux.HandleFunc("GET /admin/users/{name}", s.handleAdminUser)
	mux.Handle("POST /admin/users/{name}/edit", s.form(s.handleAdminUserEdit))
	mux.Handle("POST /admin/users/{name}/claims", s.form(s.handleAdminUserClaims))
	mux.HandleFunc("GET /admin/activity", s.handleActivity)
	mux.HandleFunc("GET /admin/groups", s.handleAdminGroups)
	mux.Handle("POST /admin/groups", s.form(s.handleAdminAddGroup))
	mux.HandleFunc("GET /admin/groups/{name}", s.handleAdminGroup)
	mux.HandleFunc("GET /admin/groups/{name}/delete", s.handleAdminGroupDeletePage)
	mux.Handle("POST /admin/groups/{name}/{action}", s.form(s.handleAdminGroupAction))
	mux.HandleFunc("GET /invite", s.handleInvitePage)
	mux.Handle("POST /invite", s.form(s.handleInvite))
	mux.HandleFunc("GET /forgot", s.handleForgotPage)
	mux.Handle("POST /forgot", s.form(s.handleForgot))
	mux.HandleFunc("GET /verify", s.handleVerify)
	mux.HandleFunc("GET /reset", s.handleResetPage)
	mux.Handle("POST /reset", s.form(s.handleReset))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	// Passkeys and second factors (mfa.go, security.go).
	mux.HandleFunc("GET /login/factor", s.handleFactorPage)
	mux.Handle("POST /login/factor", s.form(s.handleFactor))
	mux.Handle("POST /login/passkey", s.form(s.handlePasskeyLogin))
	mux.HandleFunc("GET /webauthn/options", s.handleWebAuthnOptions)
	mux.HandleFunc("GET /account/security", s.handleSecurityPage)
	mux.Handle("POST /account/security/stepup", s.form(s.handleSecurityStepUp))
	mux.Handle("POST /account/security/totp", s.form(s.handleTOTPStart))
	mux.Handle("POST /account/security/totp/confirm", s.form(s.handleTOTPConfirm))
	mux.HandleFunc("GET /account/security/totp/delete", s.handleConfirmPage)
	mux.Handle("POST /account/security/totp/delete", s.form(s.handleConfirmed))
	mux.Handle("POST /account/security/passkeys", s.form(s.handlePasskeyAdd))
	mux.Handle("POST /account/security/passkeys/{id}/rename", s.form(s.handlePasskeyRename))
	mux.HandleFunc("GET /account/security/passkeys/{id}/delete", s.handleConfirmPage)
	mux.Handle("POST /account/security/passkeys/{id}/delete", s.form(s.handleConfirmed))
	mux.HandleFunc("GET /account/security/recovery", s.handleConfirmPage)
	mux.Handle("POST /account/security/recovery", s.form(s.handleConfirmed))
	mux.Handle("POST /account/security/recovery/download", s.form(s.handleRecoveryDownload))
	// Forward auth for apps behind the reverse proxy (forwardauth.go). The checks take any
	// method: nginx's auth_request subrequest keeps the original one.
	mux.HandleFunc("/oauth/forward-auth", s.handleForwardAuth)
	mux.HandleFunc("/oauth/auth-request", s.handleAuthRequest)
	mux.HandleFunc("GET /oauth/forward-auth/start", s.handleForwardAuthStart)
	return s.headers(s.watchHost(s.logRefusals(http.MaxBytesHandler(s.underPrefix(s.pagesFor404(mux)), maxBody))))
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
