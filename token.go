package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ---- token endpoint

// tokenForm reads an RFC 6749 §3.2 request: POST, form-encoded body within maxBody, no
// parameters in the URL, no parameter repeated (§3.1).
func tokenForm(r *http.Request) (url.Values, *oauthError) {
	const form = "application/x-www-form-urlencoded"
	if ct := r.Header.Get("Content-Type"); ct != form { // the exact common value needs no parsing
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != form {
			return nil, oerr(errInvalidRequest, "the body must be application/x-www-form-urlencoded")
		}
	}
	if r.URL.RawQuery != "" {
		return nil, oerr(errInvalidRequest, "parameters must be sent in the request body, not in the URL")
	}
	// What r.ParseForm does for a POST without a query, minus a second copy of the values
	// (r.Form) and a growing read buffer: these endpoints take every request of a resource
	// server or a token client.
	body, err := readBody(r)
	var vals url.Values
	if err == nil {
		vals, err = url.ParseQuery(string(body))
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, oerr(errInvalidRequest, "the request body is larger than %d bytes", maxBody)
		}
		return nil, oerr(errInvalidRequest, "the request body is not a valid form")
	}
	r.PostForm, r.Form = vals, vals
	for k, v := range r.PostForm {
		if len(v) > 1 && k != "resource" { // RFC 8707 §2: resource may repeat (tokenTarget decides)
			return nil, oerr(errInvalidRequest, "the parameter %s is repeated (RFC 6749 §3.1)", k)
		}
	}
	return r.PostForm, nil
}

// readBody reads a request body whose size is bounded by the server (MaxBytesHandler): in
// one buffer of the announced length when there is one.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= maxBody {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(r.Body)
}

// authenticateClient identifies the caller (RFC 6749 §2.3): client_secret_basic with the
// §2.3.1 form-decoding, client_secret_post, or none for public clients; never two at once.
func (s *server) authenticateClient(ctx context.Context, r *http.Request, form url.Values) (client, *oauthError) {
	var id, secret string
	var hasSecret bool
	if h := r.Header.Get("Authorization"); h != "" {
		var oe *oauthError
		if id, secret, oe = parseBasic(h); oe != nil {
			return client{}, oe
		}
		hasSecret = true
		if _, ok := form["client_secret"]; ok {
			return client{}, oerr(errInvalidRequest, "use one client authentication method: Basic or client_secret in the body, not both")
		}
		if fid := form.Get("client_id"); fid != "" && fid != id {
			return client{}, oerr(errInvalidRequest, "client_id in the body differs from the Basic credentials")
		}
	} else {
		id = form.Get("client_id")
		secret, hasSecret = form.Get("client_secret"), form.Has("client_secret")
	}
	if id == "" {
		return client{}, oerr(errInvalidClient, "client authentication is required")
	}
	c, err := s.store.lookupClient(ctx, id) // also makes the request's later cached lookups current
	if err != nil && !errors.Is(err, errNotFound) {
		return client{}, &oauthError{Code: errTemporarilyUnavailable, Description: "the server could not check the client; try again shortly",
			Status: http.StatusServiceUnavailable, cause: err}
	}
	if c.Public && err == nil {
		if hasSecret && secret != "" {
			return client{}, oerr(errInvalidClient, "this is a public client; it has no secret to send")
		}
		return c, nil
	}
	// Confidential or unknown: compare a hash either way, so both cost the same.
	want := c.SecretHash
	if want == nil {
		want = make([]byte, sha256.Size)
	}
	// The secret is checked first (a hash: cheap), and only failures are throttled: client
	// ids are public, so a throttle in front of the check would let anyone lock a client out,
	// and a 256-bit secret cannot be guessed anyway. A correct secret always works.
	if !hasSecret || subtle.ConstantTimeCompare(hashSecret(secret), want) != 1 || err != nil {
		now := s.now()
		if d := s.guard.clients.wait(id, now); d > 0 {
			return client{}, &oauthError{Code: errInvalidClient, Status: http.StatusTooManyRequests, retryAfter: retryAfter(d),
				Description: "too many failed authentications of this client; retry after " + retryAfter(d) + " seconds"}
		}
		s.guard.clients.fail(id, now)
		s.log.Info("client authentication failed", "client_id", id, "known_client", err == nil, "from", s.sourceAddr(r))
		return client{}, oerr(errInvalidClient, "unknown client or wrong client secret")
	}
	return c, nil
}

// parseBasic reads client_secret_basic credentials: Basic, then base64 of id:secret, each
// form-encoded (RFC 6749 §2.3.1).
func parseBasic(header string) (id, secret string, oe *oauthError) {
	scheme, b64creds, _ := strings.Cut(header, " ")
	raw, err := base64.StdEncoding.DecodeString(b64creds)
	bid, bsecret, ok := strings.Cut(string(raw), ":")
	if !strings.EqualFold(scheme, "Basic") || err != nil || !ok {
		return "", "", oerr(errInvalidClient, "the Authorization header is not valid Basic authentication")
	}
	id, err1 := url.QueryUnescape(bid)
	secret, err2 := url.QueryUnescape(bsecret)
	if err1 != nil || err2 != nil {
		return "", "", oerr(errInvalidClient, "the Basic credentials are not form-encoded (RFC 6749 §2.3.1)")
	}
	return id, secret, nil
}

// Grant types (RFC 6749 §4, RFC 8628 §3.4).
const (
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantClientCredentials = "client_credentials"
	grantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// handleTokenGet refuses GET: the seed's GET form put client secrets and codes into URLs.
func (s *server) handleTokenGet(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	s.writeError(w, r, oerr(errInvalidRequest, "the token endpoint requires POST with a form body (RFC 6749 §3.2)"))
}

// tokenResponse is the RFC 6749 §5.1 success body.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
	IDToken      string `json:"id_token,omitempty"`
}

// handleToken is the token endpoint (RFC 6749 §3.2): one switch on grant_type.
func (s *server) handleToken(w http.ResponseWriter, r *http.Request) {
	form, oe := tokenForm(r)
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	c, oe := s.authenticateClient(r.Context(), r, form)
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	gt := form.Get("grant_type")
	switch gt {
	case "":
		s.writeError(w, r, oerr(errInvalidRequest, "grant_type is required"))
		return
	case grantAuthorizationCode, grantRefreshToken, grantClientCredentials, grantDeviceCode:
	default:
		s.writeError(w, r, oerr(errUnsupportedGrantType, "grant_type %q is not supported", gt))
		return
	}
	if !slices.Contains(c.GrantTypes, gt) {
		s.writeError(w, r, oerr(errUnauthorizedClient, "this client is not registered for the %s grant", gt))
		return
	}
	switch gt {
	case grantAuthorizationCode:
		s.handleAuthorizationCodeGrant(w, r, c, form)
	case grantRefreshToken:
		s.handleRefreshTokenGrant(w, r, c, form)
	case grantClientCredentials:
		s.handleClientCredentialsGrant(w, r, c, form)
	case grantDeviceCode:
		s.handleDeviceCodeGrant(w, r, c, form)
	}
}

// newPair makes a fresh access token for scope and, with refresh, a refresh token for
// refreshScope.
func (s *server) newPair(scope, refreshScope string, refresh bool, now time.Time) (tokenResponse, tokenPair) {
	resp := tokenResponse{AccessToken: newTokenValue(now), TokenType: "Bearer", ExpiresIn: int64(s.cfg.TokenTTL / time.Second), Scope: scope}
	pair := tokenPair{Access: newToken{Hash: tokenKey(resp.AccessToken), Scope: scope, ExpiresAt: now.Add(s.cfg.TokenTTL).Unix()}}
	if refresh {
		resp.RefreshToken = newTokenValue(now)
		pair.Refresh = newToken{Hash: tokenKey(resp.RefreshToken), Scope: refreshScope, ExpiresAt: now.Add(s.cfg.RefreshTTL).Unix()}
	}
	return resp, pair
}

// handleAuthorizationCodeGrant exchanges a code (RFC 6749 §4.1.3, RFC 7636 §4.6).
func (s *server) handleAuthorizationCodeGrant(w http.ResponseWriter, r *http.Request, c client, form url.Values) {
	code := form.Get("code")
	if code == "" {
		s.writeError(w, r, oerr(errInvalidRequest, "code is required"))
		return
	}
	verifier, redirect := form.Get("code_verifier"), form.Get("redirect_uri")
	if form.Has("code_verifier") && !validVerifier(verifier) {
		s.writeError(w, r, oerr(errInvalidRequest, "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)"))
		return
	}
	now := s.now()
	var resp tokenResponse
	verify := func(ac authCode) (tokenPair, error) {
		if ac.ClientID != c.ID {
			return tokenPair{}, oerr(errInvalidGrant, "the code was issued to another client")
		}
		if err := s.checkGrantAccess(r.Context(), c, ac.UserID); err != nil {
			return tokenPair{}, err
		}
		if (ac.RedirectGiven || redirect != "") && redirect != ac.RedirectURI {
			return tokenPair{}, oerr(errInvalidGrant, "redirect_uri does not match the authorization request")
		}
		if ac.CodeChallenge != "" {
			if verifier == "" {
				return tokenPair{}, oerr(errInvalidGrant, "code_verifier is required: the authorization request used PKCE")
			}
			sum := sha256.Sum256([]byte(verifier))
			if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ac.CodeChallenge)) != 1 {
				return tokenPair{}, oerr(errInvalidGrant, "code_verifier does not match the code_challenge")
			}
		} else if verifier != "" {
			// RFC 9700 §2.1.1: a verifier without a challenge is a downgrade attempt.
			return tokenPair{}, oerr(errInvalidGrant, "code_verifier sent but the authorization request had no code_challenge")
		}
		target, err := s.tokenTarget(r.Context(), form, ac.Resource, false) // RFC 8707 (resources.go)
		if err != nil {
			return tokenPair{}, err
		}
		var pair tokenPair
		resp, pair = s.newPair(s.narrowScope(r.Context(), ac.Scope, target, ac.Resource, c), ac.Scope, wantsRefresh(c, ac.Scope), now)
		if err := s.bindAccess(r.Context(), &resp, &pair, target, c, ac.UserID, ac.AuthTime, now); err != nil {
			return tokenPair{}, err
		}
		if hasScope(ac.Scope, "openid") {
			u, err := s.store.userByID(r.Context(), ac.UserID)
			if err != nil {
				return tokenPair{}, err
			}
			if resp.IDToken, err = s.idToken(r.Context(), c, u, ac.Scope, ac.AuthTime, ac.AMR, ac.Nonce, resp.AccessToken, now); err != nil {
				return tokenPair{}, err
			}
		}
		return pair, nil
	}
	ac, err := s.store.redeemCode(r.Context(), tokenKey(code), now.Unix(), verify)
	switch {
	case errors.Is(err, errNotFound):
		s.writeError(w, r, oerr(errInvalidGrant, "unknown authorization code"))
	case errors.Is(err, errExpired):
		s.writeError(w, r, oerr(errInvalidGrant, "the authorization code has expired"))
	case errors.Is(err, errCodeReused):
		s.log.Warn("authorization code replayed; its grant is revoked", "client_id", c.ID)
		s.writeError(w, r, oerr(errInvalidGrant, "the authorization code was already used; the tokens issued from it are revoked"))
	case err != nil:
		s.writeError(w, r, err)
	default:
		s.logIssued(r, "authorization_code", c.ID, ac.UserID, ac.Scope)
		writeJSON(w, http.StatusOK, resp)
	}
}

// validVerifier checks a code_verifier's form (RFC 7636 §4.1).
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range []byte(v) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
			return false
		}
	}
	return true
}

// sealedSuccessor is what a rotated refresh token keeps so that a concurrent second refresh
// within the grace gets the very same answer.
type sealedSuccessor struct {
	AccessToken  string `json:"a"`
	RefreshToken string `json:"r"`
	Scope        string `json:"s"`
	ExpiresAt    int64  `json:"e"`
	IDToken      string `json:"i,omitempty"` // only in blobs of the first format; now re-minted
}

// graceKey derives the key that seals a successor from the old refresh token itself: the
// database holds only the token's hash, from which this key cannot be computed.
func graceKey(oldToken string) cipher.AEAD {
	k := sha256.Sum256([]byte("oauthd refresh grace v1\x00" + oldToken))
	b, _ := aes.NewCipher(k[:])
	g, _ := cipher.NewGCM(b)
	return g
}

// seal encrypts a successor compactly: the raw bytes of each token, the access token's expiry
// and the scope (~100 bytes; the row of the rotated token grows by that much, and bigger rows
// meant more page splits in the serial writer). The nonce is the start of the SHA-256 in the
// successor's refresh token key, which the row keeps anyway and which is new for every seal.
// The ID token is not kept: a repeat within the grace gets a fresh one.
func seal(g cipher.AEAD, successorKey []byte, v sealedSuccessor) []byte {
	a, err1 := b64.DecodeString(v.AccessToken)
	r, err2 := b64.DecodeString(v.RefreshToken)
	n, nonce := sealShape(g, successorKey)
	if err1 != nil || err2 != nil || n == 0 || len(a) != n || len(r) != n {
		v.IDToken = ""
		pt, _ := json.Marshal(v) // not our token format: the first, self-describing format
		nonce := make([]byte, g.NonceSize())
		rand.Read(nonce)
		return g.Seal(nonce, nonce, pt, nil)
	}
	pt := make([]byte, 0, 2*n+8+len(v.Scope))
	pt = append(append(pt, a...), r...)
	pt = binary.BigEndian.AppendUint64(pt, uint64(v.ExpiresAt))
	pt = append(pt, v.Scope...)
	return g.Seal(nil, nonce, pt, nil)
}

// sealShape tells, from the successor's key, how long its raw tokens are (32 bytes for the
// untimed tokens of earlier versions, 38 for timed ones; 0 for neither) and the nonce.
func sealShape(g cipher.AEAD, successorKey []byte) (int, []byte) {
	switch len(successorKey) {
	case 32:
		return 32, successorKey[:g.NonceSize()]
	case tokenTimeLen + 32:
		return tokenTimeLen + 32, successorKey[tokenTimeLen : tokenTimeLen+g.NonceSize()]
	}
	return 0, nil
}

// unseal opens either format.
func unseal(g cipher.AEAD, successorKey, blob []byte) (sealedSuccessor, error) {
	var v sealedSuccessor
	if n, nonce := sealShape(g, successorKey); n != 0 {
		if pt, err := g.Open(nil, nonce, blob, nil); err == nil && len(pt) >= 2*n+8 {
			v.AccessToken, v.RefreshToken = b64.EncodeToString(pt[:n]), b64.EncodeToString(pt[n:2*n])
			v.ExpiresAt, v.Scope = int64(binary.BigEndian.Uint64(pt[2*n:2*n+8])), string(pt[2*n+8:])
			return v, nil
		}
	}
	if len(blob) < g.NonceSize() {
		return v, errors.New("sealed successor too short")
	}
	pt, err := g.Open(nil, blob[:g.NonceSize()], blob[g.NonceSize():], nil)
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(pt, &v)
}

// handleRefreshTokenGrant rotates a refresh token (RFC 6749 §6, RFC 9700 §4.14.2).
func (s *server) handleRefreshTokenGrant(w http.ResponseWriter, r *http.Request, c client, form url.Values) {
	rt := form.Get("refresh_token")
	if rt == "" {
		s.writeError(w, r, oerr(errInvalidRequest, "refresh_token is required"))
		return
	}
	var want []string
	if form.Has("scope") {
		var ok bool
		if want, ok = parseScope(form.Get("scope")); !ok {
			s.writeError(w, r, oerr(errInvalidScope, "scope has characters outside RFC 6749 §3.3"))
			return
		}
	}
	now := s.now()
	var resp tokenResponse
	var sealed []byte
	key := graceKey(rt) // derived here, not inside the serial writer
	issue := func(t tokenInfo) (tokenPair, []byte, error) {
		if err := s.checkGrantAccess(r.Context(), c, t.User.ID); err != nil {
			return tokenPair{}, nil, err
		}
		scope := t.Scope
		if want != nil {
			if !subset(want, strings.Fields(t.Scope)) {
				return tokenPair{}, nil, oerr(errInvalidScope, "the requested scope exceeds what was granted")
			}
			scope = strings.Join(want, " ")
		}
		target, err := s.tokenTarget(r.Context(), form, t.GrantResource, false) // RFC 8707 (resources.go)
		if err != nil {
			return tokenPair{}, nil, err
		}
		var pair tokenPair
		resp, pair = s.newPair(s.narrowScope(r.Context(), scope, target, t.GrantResource, c), t.Scope, true, now)
		if err := s.bindAccess(r.Context(), &resp, &pair, target, c, t.User.ID, t.AuthTime, now); err != nil {
			return tokenPair{}, nil, err
		}
		if hasScope(scope, "openid") {
			// OIDC Core §12.2: same sub and auth_time as at the original authentication.
			u, err := s.store.userByID(r.Context(), t.User.ID) // the rotation read carries only the id
			if err != nil {
				return tokenPair{}, nil, err
			}
			if resp.IDToken, err = s.idToken(r.Context(), c, u, scope, t.AuthTime, t.AMR, "", resp.AccessToken, now); err != nil {
				return tokenPair{}, nil, err
			}
		}
		sealed = seal(key, pair.Refresh.Hash, sealedSuccessor{AccessToken: resp.AccessToken, RefreshToken: resp.RefreshToken,
			Scope: resp.Scope, ExpiresAt: pair.Access.ExpiresAt})
		return pair, sealed, nil
	}
	res, err := s.store.rotateRefresh(r.Context(), tokenKey(rt), c.ID, now, s.cfg.RefreshGrace, issue)
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, errWrongClient):
		s.writeError(w, r, oerr(errInvalidGrant, "unknown refresh token, or one issued to another client"))
	case errors.Is(err, errExpired):
		s.writeError(w, r, oerr(errInvalidGrant, "the refresh token has expired"))
	case errors.Is(err, errRefreshReused):
		s.log.Warn("rotated refresh token replayed; its grant is revoked", "client_id", c.ID, "user_id", res.Token.User.ID)
		s.writeError(w, r, oerr(errInvalidGrant, "the refresh token was already used; every token of this grant is revoked"))
	case err != nil:
		s.writeError(w, r, err)
	case res.SuccessorBlob != nil:
		v, err := unseal(key, res.Token.SuccessorHash, res.SuccessorBlob)
		if err == nil && v.IDToken == "" && hasScope(v.Scope, "openid") {
			var u user
			if u, err = s.store.userByID(r.Context(), res.Token.User.ID); err == nil {
				v.IDToken, err = s.idToken(r.Context(), c, u, v.Scope, res.Token.AuthTime, res.Token.AMR, "", v.AccessToken, now)
			}
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.log.Info("refresh repeated within the grace; same successor returned", "client_id", c.ID, "user_id", res.Token.User.ID)
		writeJSON(w, http.StatusOK, tokenResponse{AccessToken: v.AccessToken, TokenType: "Bearer", ExpiresIn: max(v.ExpiresAt-now.Unix(), 1),
			RefreshToken: v.RefreshToken, Scope: v.Scope, IDToken: v.IDToken})
	default:
		s.logIssued(r, "refresh_token", c.ID, res.Token.User.ID, resp.Scope)
		writeJSON(w, http.StatusOK, resp)
	}
}

// ---- introspection and revocation

// tokenQuestion reads an introspection or revocation request: form, client authentication
// (confidential clients only when confidential), and the token asked about. It answers the
// error itself and returns ok=false.
func (s *server) tokenQuestion(w http.ResponseWriter, r *http.Request, confidential bool) (c client, tok string, ok bool) {
	form, oe := tokenForm(r)
	if oe == nil {
		c, oe = s.authenticateClient(r.Context(), r, form)
	}
	if oe == nil && confidential && c.Public {
		oe = oerr(errInvalidClient, "introspection is for confidential clients (resource servers)")
	}
	if oe == nil && form.Get("token") == "" {
		oe = oerr(errInvalidRequest, "token is required")
	}
	if oe != nil {
		s.writeError(w, r, oe)
		return c, "", false
	}
	return c, form.Get("token"), true
}

// handleIntrospect is RFC 7662: a confidential client asks whether a token is active.
func (s *server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	c, tok, ok := s.tokenQuestion(w, r, true)
	if !ok {
		return
	}
	rs, err := s.store.cachedResources(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.store.cachedToken(r.Context(), tokenKey(tok))
	if err != nil && !errors.Is(err, errNotFound) {
		s.writeError(w, r, err)
		return
	}
	// RFC 7662 §4: a resource's own credential learns only about tokens for that resource, so
	// that a token presented to it for another server (or for none) is refused there.
	// A token for a resource since deleted is for nobody any more.
	own, isResource := rs.byClient[c.ID]
	aud, audKnown := rs.byID[t.Resource]
	if err != nil || t.ExpiresAt <= s.now().Unix() || t.Rotated || (isResource && t.Resource != own) || (t.Resource != 0 && !audKnown) {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	resp := introspection{Active: true, Scope: t.Scope, ClientID: t.ClientID, Username: t.User.Username, Sub: t.User.Sub,
		Exp: t.ExpiresAt, Iat: t.CreatedAt, Iss: s.cfg.Issuer, TokenUse: "refresh_token", Aud: aud.URI}
	if t.User.ID == 0 { // client_credentials: the client acts for itself
		resp.Sub, resp.Username = t.ClientID, ""
	}
	if t.Kind == kindAccess {
		resp.TokenType, resp.TokenUse = "Bearer", "access_token"
	}
	if t.User.ID != 0 && scopeHas(t.Scope, "groups") {
		acc, err := s.store.cachedAccess(r.Context(), t.User.ID)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		resp.Groups = acc.Groups
	}
	if t.AMR != "" { // how the user signed in (mfa.go)
		resp.AuthTime, resp.ACR, resp.AMR = t.AuthTime, acrOf(t.AMR), amrList(t.AMR)
	}
	writeJSONBody(w, http.StatusOK, resp.appendJSON(make([]byte, 0, 512)))
}

// appendJSON is json.Marshal(v) written out by hand, byte for byte the same (checked by
// FuzzIntrospectionJSON): reflection was a third of the introspection handler's own time.
func (v introspection) appendJSON(b []byte) []byte {
	b = append(b, `{"active":`...)
	b = strconv.AppendBool(b, v.Active)
	b = appendJSONField(b, "scope", v.Scope)
	b = appendJSONField(b, "client_id", v.ClientID)
	if v.Username != "" {
		b = appendJSONField(b, "username", v.Username)
	}
	b = appendJSONField(b, "sub", v.Sub)
	if v.TokenType != "" {
		b = appendJSONField(b, "token_type", v.TokenType)
	}
	b = appendJSONField(b, "token_use", v.TokenUse)
	b = strconv.AppendInt(append(b, `,"exp":`...), v.Exp, 10)
	b = strconv.AppendInt(append(b, `,"iat":`...), v.Iat, 10)
	b = appendJSONField(b, "iss", v.Iss)
	if v.Aud != "" {
		b = appendJSONField(b, "aud", v.Aud)
	}
	if v.Groups != nil {
		b = append(b, `,"groups":[`...)
		for i, g := range v.Groups {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, g)
		}
		b = append(b, ']')
	}
	if v.AuthTime != 0 {
		b = strconv.AppendInt(append(b, `,"auth_time":`...), v.AuthTime, 10)
	}
	if v.ACR != "" {
		b = appendJSONField(b, "acr", v.ACR)
	}
	if v.AMR != "" {
		b = v.AMR.appendJSON(append(b, `,"amr":`...))
	}
	return append(b, '}')
}

// appendJSONField appends ,"name":"value" (name needs no escaping).
func appendJSONField(b []byte, name, value string) []byte {
	b = append(append(append(b, `,"`...), name...), `":`...)
	return appendJSONString(b, value)
}

// appendJSONString quotes s as encoding/json does: ", \ and control characters escaped, and
// <, >, &, U+2028 and U+2029 too; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(append(b, s[start:i]...), `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(b, s[start:]...), '"')
}

// introspection is the RFC 7662 §2.2 answer for an active token.
type introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope"`
	ClientID  string   `json:"client_id"`
	Username  string   `json:"username,omitempty"`
	Sub       string   `json:"sub"`
	TokenType string   `json:"token_type,omitempty"`
	TokenUse  string   `json:"token_use"`
	Exp       int64    `json:"exp"`
	Iat       int64    `json:"iat"`
	Iss       string   `json:"iss"`
	Aud       string   `json:"aud,omitempty"`   // the RFC 8707 resource the token is for (RFC 7662 §2.2)
	Groups    []string `json:"groups,omitzero"` // with the groups scope: the user's groups, [] for none
	AuthTime  int64    `json:"auth_time,omitempty"`
	ACR       string   `json:"acr,omitempty"`
	AMR       amrList  `json:"amr,omitempty"`
}

// inactive is the whole answer for an unknown, expired or revoked token (RFC 7662 §2.2).
var inactive = struct {
	Active bool `json:"active"`
}{}

// handleRevoke is RFC 7009: a client revokes one of its tokens; a refresh token takes its
// whole grant with it. Unknown tokens answer 200 (§2.2).
func (s *server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	c, tok, ok := s.tokenQuestion(w, r, false)
	if !ok {
		return
	}
	err := s.store.revokeToken(r.Context(), tokenKey(tok), c.ID)
	switch {
	case errors.Is(err, errWrongClient):
		s.writeError(w, r, oerr(errUnauthorizedClient, "the token was issued to another client"))
	case err != nil && !errors.Is(err, errNotFound):
		s.writeError(w, r, err)
	default:
		if err == nil {
			s.log.Info("token revoked", "client_id", c.ID)
		}
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	}
}
