package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// builtinScopes are OpenID Connect's scopes (OIDC Core §5.4, §11); every client may ask for them.
var builtinScopes = []string{"openid", "profile", "email", "offline_access", "groups"}

// claimsSupported are the claims oauthd can put in ID tokens and UserInfo answers.
var claimsSupported = []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp",
	"name", "preferred_username", "updated_at", "email", "email_verified", "groups", "amr", "acr"}

// metadata is the one source of both discovery documents: RFC 8414 authorization server
// metadata and OpenID Connect Discovery 1.0 §3.
func (s *server) metadata(ctx context.Context) (map[string]any, error) {
	scopes, err := s.store.allScopes(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := s.store.listResources(ctx)
	if err != nil {
		return nil, err
	}
	iss := s.cfg.Issuer
	authMethods := []string{"client_secret_basic", "client_secret_post", "none"}
	m := map[string]any{
		"issuer":                                         iss,
		"authorization_endpoint":                         iss + "/oauth/authorize",
		"token_endpoint":                                 iss + "/oauth/access_token",
		"introspection_endpoint":                         iss + "/oauth/introspect",
		"revocation_endpoint":                            iss + "/oauth/revoke",
		"userinfo_endpoint":                              iss + "/oauth/userinfo",
		"jwks_uri":                                       iss + "/oauth/jwks",
		"end_session_endpoint":                           iss + "/oauth/logout",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{grantAuthorizationCode, grantRefreshToken, grantClientCredentials, grantDeviceCode},
		"device_authorization_endpoint":                  iss + "/oauth/device_authorization",
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          signingAlgs,
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          authMethods,
		"introspection_endpoint_auth_methods_supported":  []string{"client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     authMethods,
		"scopes_supported":                               normScopes(append(append(scopes, builtinScopes...), resourceScopes(rs)...)),
		"claims_supported":                               claimsSupported,
		"acr_values_supported":                           []string{acrPwd, acrMFA},
		"prompt_values_supported":                        []string{"none", "login", "consent", "select_account"},
		"claims_parameter_supported":                     false,
		"request_parameter_supported":                    false,
		"request_uri_parameter_supported":                false,
		"authorization_response_iss_parameter_supported": true,
		"service_documentation":                          iss + "/",
		"client_id_metadata_document_supported":          s.cfg.ClientMetadataDocuments,
	}
	if s.cfg.Registration != registrationOff {
		m["registration_endpoint"] = iss + "/oauth/register"
	}
	return m, nil
}

// handleMetadata serves both discovery documents.
func (s *server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	m, err := s.metadata(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// cors lets browser apps call an endpoint that takes no cookies: any origin, no credentials.
func cors(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		h(w, r)
	}
}

// handlePreflight answers CORS preflight requests for the cors endpoints. Browser-based
// hosts (MCP among them) send headers of their own, such as MCP-Protocol-Version: every
// header the preflight asks for is allowed except cookies, which these endpoints never
// read (and Access-Control-Allow-Credentials is never sent, so no browser attaches them).
func handlePreflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
	h.Set("Access-Control-Allow-Headers", preflightHeaders(r.Header.Values("Access-Control-Request-Headers")))
	h.Set("Access-Control-Max-Age", "86400")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// corsHeaders are allowed to every cross-origin caller, asked for or not.
var corsHeaders = []string{"Authorization", "Content-Type", "Accept", "MCP-Protocol-Version"}

// preflightHeaders lists corsHeaders and every well-formed header name of the request's
// Access-Control-Request-Headers, except cookies (at most 32 names).
func preflightHeaders(asked []string) string {
	out := slices.Clone(corsHeaders)
	for _, line := range asked {
		for _, name := range strings.Split(line, ",") {
			name = strings.TrimSpace(name)
			lower := strings.ToLower(name)
			if name == "" || len(out) >= 32 || len(name) > 64 || !validHeaderName(name) ||
				lower == "cookie" || lower == "cookie2" || lower == "set-cookie" ||
				slices.ContainsFunc(out, func(h string) bool { return strings.EqualFold(h, name) }) {
				continue
			}
			out = append(out, lower)
		}
	}
	return strings.Join(out, ", ")
}

// validHeaderName reports whether s is an RFC 9110 §5.1 field name (a token).
func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// hasScope reports whether a space-separated scope string contains sc.
func hasScope(scope, sc string) bool { return slices.Contains(strings.Fields(scope), sc) }

// userClaims are the profile and email claims the scopes allow (OIDC Core §5.4); empty
// values are left out rather than sent as "".
func userClaims(u user, scope string, into map[string]any) {
	if hasScope(scope, "profile") {
		into["preferred_username"] = u.Username
		if u.Name != "" {
			into["name"] = u.Name
		}
		if u.UpdatedAt > 0 {
			into["updated_at"] = u.UpdatedAt
		}
	}
	if hasScope(scope, "email") && u.Email != "" {
		into["email"] = u.Email
		into["email_verified"] = u.EmailVerified
	}
}

// idToken signs an ID token (OIDC Core §2, §3.1.3.6) with the client's algorithm.
func (s *server) idToken(ctx context.Context, c client, u user, scope string, authTime int64, amr, nonce, accessToken string, now time.Time) (string, error) {
	alg := c.IDTokenAlg
	if alg == "" {
		alg = "RS256"
	}
	kid, key, err := s.signer(ctx, alg)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(accessToken)) // RS256 and ES256 both hash with SHA-256
	claims := map[string]any{
		"iss": s.cfg.Issuer, "sub": u.Sub, "aud": c.ID, "azp": c.ID,
		"iat": now.Unix(), "exp": now.Add(s.cfg.TokenTTL).Unix(), "auth_time": authTime,
		"at_hash": b64.EncodeToString(sum[:16]),
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	amrClaims(amr, claims)
	userClaims(u, scope, claims)
	if err := s.releaseClaims(ctx, u.ID, scope, claims); err != nil {
		return "", err
	}
	return signJWT(key, alg, kid, claims)
}

// wantsRefresh decides whether a grant gets a refresh token: never for a client not registered
// for the refresh_token grant; otherwise always for plain OAuth requests,
// and for OpenID requests only with offline_access (OIDC Core §11) or when the client is
// registered to always get one.
func wantsRefresh(c client, scope string) bool {
	return slices.Contains(c.GrantTypes, grantRefreshToken) &&
		(!hasScope(scope, "openid") || hasScope(scope, "offline_access") || c.AlwaysRefresh)
}

// ---- UserInfo

// bearerError answers a protected-resource error with the RFC 6750 §3 header.
func bearerError(w http.ResponseWriter, status int, code, desc string) {
	v := `Bearer realm="oauthd"`
	if code != "" {
		v += fmt.Sprintf(`, error=%q, error_description=%q`, code, desc)
	}
	if code == "insufficient_scope" {
		v += `, scope="openid"`
	}
	w.Header().Set("WWW-Authenticate", v)
	body := map[string]string{}
	if code != "" {
		body = map[string]string{"error": code, "error_description": desc}
	}
	writeJSON(w, status, body)
}

// handleUserinfo is OIDC Core §5.3: the claims about the user that the token's scopes allow.
// The token comes in the Authorization header (RFC 6750 §2.1) or a form body (§2.2); never in
// the URL (§2.3 is not supported).
func (s *server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("access_token") {
		bearerError(w, http.StatusBadRequest, "invalid_request", "send the access token in the Authorization header or a form body, not in the URL")
		return
	}
	var tok string
	auth := r.Header.Get("Authorization")
	if auth != "" {
		scheme, rest, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(rest) == "" {
			bearerError(w, http.StatusUnauthorized, "invalid_token", "the Authorization header must be Bearer <token>")
			return
		}
		tok = strings.TrimSpace(rest)
	}
	if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err != nil {
			bearerError(w, http.StatusBadRequest, "invalid_request", "the request body is not a valid form")
			return
		}
		if v, ok := r.PostForm["access_token"]; ok {
			if len(v) > 1 || tok != "" {
				bearerError(w, http.StatusBadRequest, "invalid_request", "send the access token exactly once")
				return
			}
			tok = v[0]
		}
	}
	if tok == "" {
		bearerError(w, http.StatusUnauthorized, "", "")
		return
	}
	err := s.store.fresh(r.Context())
	var t tokenInfo
	if err == nil {
		t, err = s.store.cachedToken(r.Context(), tokenKey(tok))
	}
	if err != nil && !errors.Is(err, errNotFound) {
		s.writeError(w, r, err)
		return
	}
	if err != nil || t.Kind != kindAccess || t.ExpiresAt <= s.now().Unix() {
		bearerError(w, http.StatusUnauthorized, "invalid_token", "the access token is unknown, expired or revoked")
		return
	}
	if t.Resource != 0 { // RFC 8707: a token for a resource server is not for this endpoint
		bearerError(w, http.StatusUnauthorized, "invalid_token", "the access token was issued for a resource server, not for UserInfo; ask for a token without resource")
		return
	}
	if !hasScope(t.Scope, "openid") {
		bearerError(w, http.StatusForbidden, "insufficient_scope", "the access token was not granted the openid scope")
		return
	}
	claims := map[string]any{"sub": t.User.Sub}
	userClaims(t.User, t.Scope, claims)
	if err := s.releaseClaims(r.Context(), t.User.ID, t.Scope, claims); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, claims)
}

// ---- account page

// accountPage is the profile form's data.
type accountPage struct {
	pageData
	Username, Name, Email, Error string
	Sessions                     []sessionInfo
	EmailVerified                bool
	LogoutCSRF                   string
}

// handleAccountPage shows the logged-in user's profile form.
func (s *server) handleAccountPage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if !ok {
		s.redirectToLogin(w, r, "/account", "")
		return
	}
	s.renderAccount(w, r, sess, http.StatusOK, "")
}

// renderAccount shows the account page: profile, password, sessions; with errMsg, the reason a
// form was refused.
func (s *server) renderAccount(w http.ResponseWriter, r *http.Request, sess session, status int, errMsg string) {
	u := sess.User
	page := accountPage{pageData: s.pageData(sess, "account"), Username: u.Username, Name: u.Name,
		Email: u.Email, EmailVerified: u.EmailVerified, LogoutCSRF: s.csrfToken(sess.Hash, "logout"), Error: errMsg}
	if errMsg == "" {
		page.Notice = s.takeNotice(w, r)
	}
	var err error
	if page.Sessions, err = s.store.listSessions(r.Context(), u.ID, s.now().Unix(), sess.Hash); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.render(w, status, "account", page)
}

// handleAccount saves name and email; a changed email is no longer verified.
func (s *server) handleAccount(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if !ok {
		s.errorPage(w, http.StatusForbidden, "Session ended", "You are no longer signed in.")
		return
	}
	name, email := strings.TrimSpace(r.PostForm.Get("name")), strings.TrimSpace(r.PostForm.Get("email"))
	page := accountPage{pageData: s.pageData(sess, "account"), Username: sess.User.Username, Name: name, Email: email,
		LogoutCSRF: s.csrfToken(sess.Hash, "logout")}
	if !s.checkCSRF(r, sess.Hash, "account") {
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "account", page)
		return
	}
	if err := validProfile(name, email); err != nil {
		page.Error = sentence(err)
		s.render(w, http.StatusBadRequest, "account", page)
		return
	}
	if err := s.store.setProfile(r.Context(), sess.User.ID, name, email, s.now().Unix()); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("profile changed", "user", sess.User.Username)
	notice := "Your profile is saved."
	if email != "" && (email != sess.User.Email || !sess.User.EmailVerified) && s.forgotAccounts.take("verify:"+sess.User.Sub, s.now()) {
		sent, err := s.sendVerification(r.Context(), sess.User, email)
		switch {
		case err != nil:
			s.serverErrorPage(w, r, err)
			return
		case sent:
			notice += " A link to confirm " + email + " is on its way to it; the address counts as verified once you follow it."
		case email != sess.User.Email:
			notice += " The new email is unverified until an administrator verifies it (this server sends no mail)."
		}
	}
	s.seeOther(w, r, "/account", notice)
}

// validProfile checks a display name and an email address (empty means none).
func validProfile(name, email string) error {
	if len(name) > 200 || !utf8.ValidString(name) || strings.ContainsAny(name, "\x00\r\n") {
		return errors.New("the name must be at most 200 characters on one line")
	}
	if email != "" {
		a, err := mail.ParseAddress(email)
		if err != nil || a.Address != email || len(email) > 254 {
			return errors.New("the email address is not valid (write it as name@example.org)")
		}
	}
	return nil
}

// ---- RP-initiated logout

// logoutPage is the end-session confirmation and result page.
type logoutPage struct {
	pageData
	Confirm                     bool
	ClientName                  string
	ClientID, PostLogout, State string
	Link, LinkHost              string // where an unvetted client asked to be sent back, offered as a link
}

// handleEndSession is OpenID Connect RP-Initiated Logout 1.0 (§2, §3). The session ends
// without asking only when a valid id_token_hint names the signed-in user; otherwise the user
// confirms on a page. The browser goes to post_logout_redirect_uri only when it is registered
// for the client named by the hint or client_id; an unregistered one gets an error page.
func (s *server) handleEndSession(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The logout request could not be read.")
			return
		}
		params = r.PostForm
	}
	for k, v := range params {
		if len(v) > 1 {
			s.errorPage(w, http.StatusBadRequest, "Invalid logout request", "The request repeats the parameter "+k+".")
			return
		}
	}
	hint, clientID := params.Get("id_token_hint"), params.Get("client_id")
	plr, state := params.Get("post_logout_redirect_uri"), params.Get("state")
	var hintSub, hintAud string
	if hint != "" {
		if claims, err := s.verifyIDTokenHint(r.Context(), hint); err == nil {
			hintSub, _ = claims["sub"].(string)
			hintAud = audience(claims)
		} else {
			s.log.Info("logout: id_token_hint not accepted", "cause", err)
		}
	}
	if hintAud != "" && clientID != "" && clientID != hintAud {
		s.errorPage(w, http.StatusBadRequest, "Invalid logout request", "client_id does not match the id_token_hint.")
		return
	}
	if clientID == "" {
		clientID = hintAud
	}
	var c client
	if clientID != "" {
		var err error
		if c, err = s.store.clientByID(r.Context(), clientID); errors.Is(err, errNotFound) {
			s.errorPage(w, http.StatusBadRequest, "Invalid logout request", "No application is registered with this client_id.")
			return
		} else if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
	}
	if plr != "" && (c.ID == "" || !slices.Contains(c.PostLogoutURIs, plr)) {
		s.errorPage(w, http.StatusBadRequest, "Invalid logout request",
			"The post_logout_redirect_uri is not registered for this application (it needs a valid id_token_hint or client_id).")
		return
	}
	sess, loggedIn := s.session(r)
	if loggedIn {
		provable := hintSub != "" && hintSub == sess.User.Sub
		confirmed := r.Method == http.MethodPost && params.Get("confirm") == "yes"
		if confirmed && (s.cop.Check(r) != nil || !s.checkCSRF(r, sess.Hash, "end_session")) {
			s.errorPage(w, http.StatusForbidden, "Request refused", "The sign-out form is missing its security token. Go back and try again.")
			return
		}
		if !provable && !confirmed {
			s.render(w, http.StatusOK, "logout", logoutPage{pageData: s.pageData(sess, "end_session"), Confirm: true,
				ClientName: c.Name, ClientID: c.ID, PostLogout: plr, State: state})
			return
		}
		if err := s.store.deleteSession(r.Context(), sess.Hash); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.setCookie(w, "oauthd_session", "", -1)
		s.log.Info("logout requested by an application", "user", sess.User.Username, "client_id", c.ID)
	}
	to := plr
	if plr != "" && state != "" {
		to = redirectWith(plr, url.Values{"state": {state}})
	}
	// A client nobody vetted may have registered any URI: the browser goes there only with a
	// valid id_token_hint issued to that client (RP-Initiated Logout 1.0 §3); otherwise the
	// signed-out page offers it as a link, naming its host.
	if plr != "" && (c.Vetted || hintAud == c.ID) {
		http.Redirect(w, r, to, http.StatusSeeOther)
		return
	}
	page := logoutPage{ClientName: c.Name}
	if plr != "" {
		page.Link = to
		if u, err := url.Parse(plr); err == nil {
			page.LinkHost = u.Host
		}
	}
	s.render(w, http.StatusOK, "logout", page)
}

// verifyIDTokenHint checks that an ID token was signed by one of our stored keys and issued by
// us. Expiry is not checked: a hint is often an old token (RP-Initiated Logout §2).
func (s *server) verifyIDTokenHint(ctx context.Context, tok string) (map[string]any, error) {
	all, err := s.store.listKeys(ctx)
	if err != nil {
		return nil, err
	}
	keys := make([]jwk, 0, len(all))
	for _, k := range all {
		keys = append(keys, k.JWK)
	}
	claims, err := verifyJWT(tok, keys)
	if err != nil {
		return nil, err
	}
	if claims["iss"] != s.cfg.Issuer {
		return nil, errors.New("id_token_hint was issued by another issuer")
	}
	return claims, nil
}

// audience returns the single audience of ID token claims ("" when absent or several).
func audience(claims map[string]any) string {
	switch a := claims["aud"].(type) {
	case string:
		return a
	case []any:
		if len(a) == 1 {
			s, _ := a[0].(string)
			return s
		}
	}
	return ""
}
