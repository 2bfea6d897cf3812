package main

import (
	"cmp"
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Registration modes of -registration.
const (
	registrationOff   = "off"
	registrationToken = "token" // an initial access token is required
	registrationOpen  = "open"  // anyone may register public clients, rate-limited per address
)

// RFC 7591 §3.2.2 error codes.
const (
	errInvalidRedirectURI    = "invalid_redirect_uri"
	errInvalidClientMetadata = "invalid_client_metadata"
)

// clientMetadata is the RFC 7591 §2 client metadata oauthd understands (plus the RFC 7592
// fields a PUT repeats). Other members are ignored, as §2 allows.
type clientMetadata struct {
	ClientID                 string   `json:"client_id,omitempty"`
	ClientSecret             string   `json:"client_secret,omitempty"`
	RedirectURIs             []string `json:"redirect_uris,omitempty"`
	TokenEndpointAuthMethod  string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes               []string `json:"grant_types,omitempty"`
	ResponseTypes            []string `json:"response_types,omitempty"`
	ClientName               string   `json:"client_name,omitempty"`
	ClientURI                string   `json:"client_uri,omitempty"`
	LogoURI                  string   `json:"logo_uri,omitempty"`
	Scope                    string   `json:"scope,omitempty"`
	PostLogoutRedirectURIs   []string `json:"post_logout_redirect_uris,omitempty"`
	IDTokenSignedResponseAlg string   `json:"id_token_signed_response_alg,omitempty"`
	ApplicationType          string   `json:"application_type,omitempty"` // OpenID Registration §2: web (default) or native
}

// spec turns metadata into a client registration, checking what RFC 7591 §2 asks: a known
// token_endpoint_auth_method, grant_types consistent with response_types; and what oauthd
// asks: scopes and grants within lim.
func (m clientMetadata) spec(lim registrationLimit) (clientSpec, *oauthError) {
	sp := clientSpec{Name: m.ClientName, Scope: m.Scope, RedirectURIs: m.RedirectURIs, PostLogoutURIs: m.PostLogoutRedirectURIs,
		IDTokenAlg: m.IDTokenSignedResponseAlg, LogoURI: m.LogoURI, ClientURI: m.ClientURI, Dynamic: true}
	switch m.TokenEndpointAuthMethod {
	case "", "client_secret_basic", "client_secret_post":
	case "none":
		sp.Public = true
	default:
		return sp, oerr(errInvalidClientMetadata, "token_endpoint_auth_method must be client_secret_basic, client_secret_post or none")
	}
	if sp.Name == "" {
		sp.Name = "Unnamed application"
	}
	if oe := checkApplicationType(m.ApplicationType, m.RedirectURIs); oe != nil {
		return sp, oe
	}
	sp.ApplicationType = cmp.Or(m.ApplicationType, "web")
	sp.GrantTypes = m.GrantTypes
	if len(sp.GrantTypes) == 0 {
		sp.GrantTypes = []string{grantAuthorizationCode}
	}
	code := slices.Contains(sp.GrantTypes, grantAuthorizationCode)
	rts := m.ResponseTypes
	if rts == nil && code {
		rts = []string{"code"} // RFC 7591 §2: the default
	}
	for _, rt := range rts {
		if rt != "code" {
			return sp, oerr(errInvalidClientMetadata, "response_types may only contain code")
		}
	}
	if code != (len(rts) > 0) {
		return sp, oerr(errInvalidClientMetadata, "grant_types and response_types disagree: authorization_code goes with response type code (RFC 7591 §2.1)")
	}
	if slices.Contains(sp.GrantTypes, "device_code") {
		return sp, oerr(errInvalidClientMetadata, "use the grant type URN %s", grantDeviceCode)
	}
	scopes, ok := parseScope(m.Scope)
	if !ok {
		return sp, oerr(errInvalidClientMetadata, "scope has characters outside RFC 6749 §3.3")
	}
	for _, sc := range scopes {
		if !slices.Contains(lim.scopes, sc) {
			return sp, oerr(errInvalidClientMetadata, "scope %q is not open to dynamic registration on this server: the administrator can open it with -registration-scopes or list it in the initial access token (oauthd registration-token create -scope)", sc)
		}
	}
	for _, g := range sp.GrantTypes {
		if !slices.Contains(lim.grants, g) && slices.Contains(knownGrants, g) {
			return sp, oerr(errInvalidClientMetadata, "grant type %q is not open to dynamic registration: it needs an initial access token made with oauthd registration-token create -grant %s", g, g)
		}
	}
	return sp, nil
}

// knownGrants are the grant types oauthd implements.
var knownGrants = []string{grantAuthorizationCode, grantRefreshToken, grantClientCredentials, grantDeviceCode}

// userGrants are the grants in which a person signs in and consents: a client nobody vetted may
// have them. client_credentials acts without a person, so only an initial access token that
// lists it opens it.
var userGrants = []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode}

// registrationLimit is what a dynamically registered client may have (issue 11): the built-in
// OpenID scopes, the scopes the operator opened with -registration-scopes and, with an initial
// access token, the scopes and grants that token lists. An RFC 7592 update stays within the
// same limit, which the client keeps (reg_scopes, reg_grants).
type registrationLimit struct {
	scopes, grants []string
}

// registrationLimit builds the limit for a registration whose initial access token opened
// tokScopes and tokGrants (none without a token).
func (s *server) registrationLimit(tokScopes, tokGrants []string) registrationLimit {
	sc := append(append(slices.Clone(builtinScopes), strings.Fields(s.cfg.RegistrationScopes)...), tokScopes...)
	return registrationLimit{scopes: sc, grants: append(slices.Clone(userGrants), tokGrants...)}
}

// metadataOf describes a registered client as RFC 7591 §3.2.1 and RFC 7592 §3 answer it.
func (s *server) metadataOf(c client) map[string]any {
	method := "client_secret_basic"
	if c.Public {
		method = "none"
	}
	m := map[string]any{
		"client_id": c.ID, "client_id_issued_at": c.CreatedAt, "client_name": c.Name,
		"redirect_uris": nonNil(c.RedirectURIs), "token_endpoint_auth_method": method, "grant_types": c.GrantTypes,
		"response_types": []string{}, "id_token_signed_response_alg": c.IDTokenAlg,
		"registration_client_uri": s.cfg.Issuer + "/oauth/register/" + c.ID,
		"application_type":        c.ApplicationType,
	}
	if slices.Contains(c.GrantTypes, grantAuthorizationCode) {
		m["response_types"] = []string{"code"}
	}
	if !c.Public {
		m["client_secret_expires_at"] = 0
	}
	if len(c.Scopes) > 0 { // none registered (a resource's scopes come with the resource): no scope member
		m["scope"] = strings.Join(c.Scopes, " ")
	}
	for k, v := range map[string]string{"logo_uri": c.LogoURI, "client_uri": c.ClientURI} {
		if v != "" {
			m[k] = v
		}
	}
	if len(c.PostLogoutURIs) > 0 {
		m["post_logout_redirect_uris"] = c.PostLogoutURIs
	}
	return m
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// readMetadata decodes a JSON client metadata body.
func readMetadata(r *http.Request) (clientMetadata, *oauthError) {
	var m clientMetadata
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return m, oerr(errInvalidRequest, "the body must be application/json (RFC 7591 §3.1)")
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&m); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return m, oerr(errInvalidRequest, "the request body is larger than %d bytes", maxBody)
		}
		return m, oerr(errInvalidClientMetadata, "the body is not client metadata JSON: %v", jsonProblem(err))
	}
	if dec.More() {
		return m, oerr(errInvalidClientMetadata, "the body has more than one JSON object")
	}
	return m, nil
}

// jsonProblem says what was wrong with JSON without echoing the input.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field + " has the wrong type"
	}
	return "malformed JSON"
}

// bearer returns the token of an Authorization: Bearer header, "" when absent.
func bearer(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// specErrorToOAuth maps a registration validation failure to its RFC 7591 §3.2.2 code.
func specErrorToOAuth(err error) *oauthError {
	var se *specError
	if errors.As(err, &se) && se.Redirect {
		return oerr(errInvalidRedirectURI, "%s", se.msg)
	}
	return oerr(errInvalidClientMetadata, "%s", err.Error())
}

// handleRegister is dynamic client registration (RFC 7591 §3).
func (s *server) handleRegister(w http.ResponseWriter, r *http.Request) {
	mode := s.cfg.Registration
	if mode == registrationOff {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": errAccessDenied, "error_description": "dynamic client registration is turned off on this server"})
		return
	}
	now := s.now()
	tok := bearer(r)
	if mode == registrationOpen && tok == "" {
		// Counted before anything else is checked, in one step (concurrent requests cannot all
		// pass the check first).
		if !s.registrations.take(s.sourceKey(r), now) {
			w.Header().Set("Retry-After", "3600")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down", "error_description": "too many registrations from this address; try again later"})
			return
		}
	}
	if mode == registrationToken && tok == "" {
		bearerError(w, http.StatusUnauthorized, "invalid_token", "registration requires an initial access token (oauthd registration-token create)")
		return
	}
	m, oe := readMetadata(r)
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	var rt registrationTokenLimit
	if tok != "" {
		var err error
		if rt, err = s.store.registrationTokenLimit(r.Context(), hashSecret(tok), now.Unix()); errors.Is(err, errNotFound) {
			bearerError(w, http.StatusUnauthorized, "invalid_token", "the initial access token is unknown, used up or expired")
			return
		} else if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	// A resource's scopes are requested together with the resource (RFC 8707), by any client;
	// they are not registered with the client (resources.go).
	var err error
	if m.Scope, err = s.withoutResourceScopes(r.Context(), m.Scope); err != nil {
		s.writeError(w, r, err)
		return
	}
	sp, oe := m.spec(s.registrationLimit(rt.Scopes, rt.Grants))
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	substituted := false
	if tok == "" && !sp.Public {
		// Open registration registers public clients only. An MCP host that asks for a
		// confidential method (or omits it: RFC 7591's default is client_secret_basic) gets a
		// public client, and the response says so (RFC 7591 §3.2.1), instead of a refusal.
		sp.Public, substituted = true, true
	}
	c, err := sp.build()
	if err != nil {
		oe := specErrorToOAuth(err)
		if substituted {
			oe.Description += " (without an initial access token this server registers public clients only: token_endpoint_auth_method none)"
		}
		s.writeError(w, r, oe)
		return
	}
	c.CreatedAt = now.Unix()
	c.RegScopes, c.RegGrants = rt.Scopes, rt.Grants
	secret, regToken := c.issueSecret(), newSecret()
	c.RegistrationHash = hashSecret(regToken)
	err = s.store.registerClient(r.Context(), c, hashSecret(tok), tok != "", now.Unix())
	if errors.Is(err, errNotFound) {
		bearerError(w, http.StatusUnauthorized, "invalid_token", "the initial access token is unknown, used up or expired")
		return
	} else if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("client registered dynamically", "client_id", c.ID, "public", c.Public, "made_public", substituted)
	s.record(r, "registration", "", c.ID, "registered itself (RFC 7591): "+c.Name)
	out := s.metadataOf(c)
	out["registration_access_token"] = regToken
	if secret != "" {
		out["client_secret"] = secret
		if m.TokenEndpointAuthMethod == "client_secret_post" {
			out["token_endpoint_auth_method"] = "client_secret_post"
		}
	}
	writeJSON(w, http.StatusCreated, out)
}

// registrationClient authenticates an RFC 7592 request: the registration access token of
// the client in the path. Every failure is the same 401 (RFC 7592 §2.1, RFC 6750 §3.1).
func (s *server) registrationClient(w http.ResponseWriter, r *http.Request) (client, bool) {
	c, err := s.store.clientByID(r.Context(), r.PathValue("id"))
	if err != nil && !errors.Is(err, errNotFound) {
		s.writeError(w, r, err)
		return c, false
	}
	tok := bearer(r)
	if err != nil || tok == "" || c.RegistrationHash == nil || subtle.ConstantTimeCompare(hashSecret(tok), c.RegistrationHash) != 1 {
		bearerError(w, http.StatusUnauthorized, "invalid_token", "unknown client or wrong registration access token")
		return c, false
	}
	return c, true
}

// handleRegistrationGet reads a client's configuration (RFC 7592 §2.1).
func (s *server) handleRegistrationGet(w http.ResponseWriter, r *http.Request) {
	if c, ok := s.registrationClient(w, r); ok {
		writeJSON(w, http.StatusOK, s.metadataOf(c))
	}
}

// handleRegistrationPut replaces a client's metadata (RFC 7592 §2.2); its id, secret and
// type (public or confidential) stay.
func (s *server) handleRegistrationPut(w http.ResponseWriter, r *http.Request) {
	c, ok := s.registrationClient(w, r)
	if !ok {
		return
	}
	m, oe := readMetadata(r)
	if oe == nil && m.ClientID != c.ID {
		oe = oerr(errInvalidRequest, "client_id in the body must be this client's id (RFC 7592 §2.2)")
	}
	if oe == nil && m.ClientSecret != "" && (c.SecretHash == nil || subtle.ConstantTimeCompare(hashSecret(m.ClientSecret), c.SecretHash) != 1) {
		oe = oerr(errInvalidRequest, "client_secret in the body does not match")
	}
	var sp clientSpec
	if oe == nil {
		// RFC 7592 §2.2: an update is checked like a registration, within the limit the
		// client was registered with; it can never widen it.
		var err error
		if m.Scope, err = s.withoutResourceScopes(r.Context(), m.Scope); err != nil { // resources.go
			s.writeError(w, r, err)
			return
		}
		sp, oe = m.spec(s.registrationLimit(c.RegScopes, c.RegGrants))
	}
	if oe == nil && c.Public && !sp.Public {
		sp.Public = true // registered public in place of the confidential method it asked for; it stays so
	}
	if oe == nil && sp.Public != c.Public {
		oe = oerr(errInvalidClientMetadata, "token_endpoint_auth_method cannot change between public and confidential; register a new client")
	}
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	oldURIs := slices.Clone(c.RedirectURIs)
	if err := sp.apply(&c); err != nil {
		s.writeError(w, r, specErrorToOAuth(err))
		return
	}
	if err := s.store.updateClient(r.Context(), c); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Users approved the app for the URIs it had: a new one must be approved again, or codes
	// would go silently to where an attacker who took the registration token points them.
	if !slices.Equal(oldURIs, c.RedirectURIs) {
		if _, err := s.store.exec(r.Context(), "DELETE FROM consents WHERE client_id = ?", c.ID); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	s.log.Info("client updated through its registration endpoint", "client_id", c.ID)
	writeJSON(w, http.StatusOK, s.metadataOf(c))
}

// handleRegistrationDelete deletes a client and everything issued to it (RFC 7592 §2.3).
func (s *server) handleRegistrationDelete(w http.ResponseWriter, r *http.Request) {
	c, ok := s.registrationClient(w, r)
	if !ok {
		return
	}
	if err := s.store.deleteClient(r.Context(), c.ID); err != nil && !errors.Is(err, errNotFound) {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("client deleted through its registration endpoint", "client_id", c.ID)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// checkApplicationType enforces OpenID Connect Registration §2's application_type on the
// redirect URIs: web (the default) uses https, or http on a loopback host; native uses http
// on a loopback host (RFC 8252 §7.3) or a private-use scheme (§7.1).
func checkApplicationType(appType string, uris []string) *oauthError {
	switch appType {
	case "", "web", "native":
	default:
		return oerr(errInvalidClientMetadata, "application_type must be web or native")
	}
	for _, raw := range uris {
		u, err := url.Parse(raw)
		if err != nil {
			continue // validateRedirectURI says what is wrong with it
		}
		loopback := u.Scheme == "http" && isLoopbackName(u.Hostname())
		switch {
		case appType == "native" && u.Scheme == "https":
			return oerr(errInvalidRedirectURI, "redirect URI %q: a native application redirects to http on a loopback host (RFC 8252 §7.3) or to a private-use scheme (§7.1); register https redirect URIs with application_type web", raw)
		case appType == "native" && u.Scheme == "http" && !loopback:
			return oerr(errInvalidRedirectURI, "redirect URI %q: a native application may use http only on a loopback host (127.0.0.1, [::1], localhost)", raw)
		case appType != "native" && u.Scheme != "https" && !loopback:
			return oerr(errInvalidRedirectURI, "redirect URI %q: a web application redirects to https (or http on a loopback host); register a private-use scheme with application_type native", raw)
		}
	}
	return nil
}

// ---- storage

// registerClient stores a dynamically registered client; with an initial access token it
// uses one of the token's uses in the same transaction (errNotFound when none is left).
func (st *store) registerClient(ctx context.Context, c client, tokenHash []byte, withToken bool, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if withToken {
			if err := affected(st.txExec(ctx, tx, "UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE hash = ? AND uses_left > 0 AND expires_at > ?",
				tokenHash, now)); err != nil {
				return err
			}
		}
		_, err := st.txExec(ctx, tx, insertClientSQL, append([]any{c.ID, c.CreatedAt}, clientArgs(c)...)...)
		return err
	})
}

// createRegistrationToken stores an initial access token usable uses times until expires,
// opening scopes and grants to the clients it registers.
func (st *store) createRegistrationToken(ctx context.Context, hash []byte, uses int, expires time.Time, now int64, scopes, grants []string) error {
	_, err := st.exec(ctx, "INSERT INTO registration_tokens(hash, uses_left, expires_at, created_at, scopes, grant_types) VALUES(?, ?, ?, ?, ?, ?)",
		hash, uses, expires.Unix(), now, strings.Join(scopes, " "), strings.Join(grants, " "))
	return err
}

// registrationTokenLimit is what an initial access token opens.
type registrationTokenLimit struct {
	Scopes, Grants []string
}

// registrationTokenLimit reads what a usable initial access token opens (errNotFound when it
// is unknown, used up or expired). registerClient still takes the use atomically.
func (st *store) registrationTokenLimit(ctx context.Context, hash []byte, now int64) (registrationTokenLimit, error) {
	var sc, gr string
	err := st.queryRow(ctx, "SELECT scopes, grant_types FROM registration_tokens WHERE hash = ? AND uses_left > 0 AND expires_at > ?", hash, now).Scan(&sc, &gr)
	if errors.Is(err, sql.ErrNoRows) {
		return registrationTokenLimit{}, errNotFound
	}
	return registrationTokenLimit{Scopes: strings.Fields(sc), Grants: strings.Fields(gr)}, err
}
