package main

import (
	"crypto/rand"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// ---- client_credentials (RFC 6749 §4.4)

// handleClientCredentialsGrant issues an access token to a confidential client acting for
// itself: no user, no refresh token, scopes within the client's registered ones.
func (s *server) handleClientCredentialsGrant(w http.ResponseWriter, r *http.Request, c client, form url.Values) {
	if c.Public {
		s.writeError(w, r, oerr(errUnauthorizedClient, "public clients cannot use client_credentials"))
		return
	}
	target, err := s.tokenTarget(r.Context(), form, "", true) // RFC 8707: any registered resource (resources.go)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	scopes := c.Scopes
	if target != nil {
		scopes = normScopes(append(slices.Clone(c.Scopes), target.Scopes...))
	}
	if form.Has("scope") {
		var ok bool
		if scopes, ok = parseScope(form.Get("scope")); !ok {
			s.writeError(w, r, oerr(errInvalidScope, "scope has characters outside RFC 6749 §3.3"))
			return
		}
		allowed := func(x string) bool {
			return slices.Contains(c.Scopes, x) || (target != nil && slices.Contains(target.Scopes, x))
		}
		if bad := slices.DeleteFunc(slices.Clone(scopes), allowed); len(bad) > 0 {
			s.writeError(w, r, oerr(errInvalidScope, "scope not registered for this client: %s", strings.Join(bad, " ")))
			return
		}
	}
	now := s.now()
	scope := strings.Join(scopes, " ")
	resp, pair := s.newPair(scope, "", false, now)
	if err := s.bindAccess(r.Context(), &resp, &pair, target, c, 0, 0, now); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.issueClientToken(r.Context(), c.ID, pair.Access, now.Unix()); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logIssued(r, grantClientCredentials, c.ID, 0, scope)
	writeJSON(w, http.StatusOK, resp)
}

// ---- device authorization grant (RFC 8628)

// userCodeAlphabet has no vowels and no look-alikes (RFC 8628 §6.1): 20^8 ≈ 2^34.6 codes.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// Device flow timing (RFC 8628 §3.2).
const (
	deviceCodeTTL  = 10 * time.Minute
	devicePollWait = 5 // seconds between polls
)

// newUserCode returns 8 random characters of userCodeAlphabet.
func newUserCode() string {
	b := make([]byte, 8)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(userCodeAlphabet))))
		b[i] = userCodeAlphabet[n.Int64()]
	}
	return string(b)
}

// normalizeUserCode accepts what a person types: any case, with dashes or spaces.
func normalizeUserCode(in string) (string, bool) {
	out := strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToUpper(strings.TrimSpace(in)))
	if len(out) != 8 || strings.Trim(out, userCodeAlphabet) != "" {
		return "", false
	}
	return out, true
}

// handleDeviceAuthorization starts a device flow (RFC 8628 §3.1-3.2).
func (s *server) handleDeviceAuthorization(w http.ResponseWriter, r *http.Request) {
	form, oe := tokenForm(r)
	var c client
	if oe == nil {
		c, oe = s.authenticateClient(r.Context(), r, form)
	}
	if oe == nil && !slices.Contains(c.GrantTypes, grantDeviceCode) {
		oe = oerr(errUnauthorizedClient, "this client is not registered for the device authorization grant")
	}
	if oe != nil {
		s.writeError(w, r, oe)
		return
	}
	res, err := s.requestedResources(r.Context(), form["resource"]) // RFC 8707 (resources.go)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	scopes := normScopes(append(slices.Clone(c.Scopes), resourceScopes(res)...))
	if form.Has("scope") {
		var ok bool
		if scopes, ok = parseScope(form.Get("scope")); !ok {
			s.writeError(w, r, oerr(errInvalidScope, "scope has characters outside RFC 6749 §3.3"))
			return
		}
		for _, sc := range scopes {
			if !slices.Contains(c.Scopes, sc) && !slices.Contains(builtinScopes, sc) && !resourceScope(res, sc) {
				s.writeError(w, r, oerr(errInvalidScope, "scope not allowed for this client: %s", sc))
				return
			}
		}
	}
	now := s.now()
	if !s.deviceStarts.take(s.sourceKey(r), now) { // counted before anything is stored
		w.Header().Set("Retry-After", retryAfter(deviceCodeTTL))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down",
			"error_description": "too many device authorizations from this address; try again in " + waitText(deviceCodeTTL)})
		return
	}
	device := newSecret()
	var user string
	for range 5 { // a collision among live user codes is rare; try again
		user = newUserCode()
		err = s.store.createDeviceCode(r.Context(), hashSecret(device), hashSecret(user), deviceCode{ClientID: c.ID,
			Scope: strings.Join(scopes, " "), Interval: devicePollWait, ExpiresAt: now.Add(deviceCodeTTL).Unix(), Resource: resourceURIs(res)}, now.Unix())
		if !errors.Is(err, errExists) {
			break
		}
	}
	if errors.Is(err, errTooMany) {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down",
			"error_description": "too many device authorizations are waiting for approval; try again in a minute"})
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	shown := user[:4] + "-" + user[4:]
	s.log.Info("device authorization started", "client_id", c.ID)
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code": device, "user_code": shown,
		"verification_uri":          s.cfg.Issuer + "/device",
		"verification_uri_complete": s.cfg.Issuer + "/device?user_code=" + shown,
		"expires_in":                int64(deviceCodeTTL / time.Second), "interval": devicePollWait,
	})
}

// handleDeviceCodeGrant is the device's polling (RFC 8628 §3.4-3.5).
func (s *server) handleDeviceCodeGrant(w http.ResponseWriter, r *http.Request, c client, form url.Values) {
	dc := form.Get("device_code")
	if dc == "" {
		s.writeError(w, r, oerr(errInvalidRequest, "device_code is required"))
		return
	}
	now := s.now()
	var resp tokenResponse
	issue := func(d deviceCode) (tokenPair, error) {
		if err := s.checkGrantAccess(r.Context(), c, d.UserID); err != nil {
			return tokenPair{}, err
		}
		target, err := s.tokenTarget(r.Context(), form, d.Resource, false) // RFC 8707 (resources.go)
		if err != nil {
			return tokenPair{}, err
		}
		var pair tokenPair
		resp, pair = s.newPair(s.narrowScope(r.Context(), d.Scope, target, d.Resource, c), d.Scope, wantsRefresh(c, d.Scope), now)
		if err := s.bindAccess(r.Context(), &resp, &pair, target, c, d.UserID, d.AuthTime, now); err != nil {
			return tokenPair{}, err
		}
		if hasScope(d.Scope, "openid") {
			u, err := s.store.userByID(r.Context(), d.UserID)
			if err != nil {
				return tokenPair{}, err
			}
			if resp.IDToken, err = s.idToken(r.Context(), c, u, d.Scope, d.AuthTime, d.AMR, "", resp.AccessToken, now); err != nil {
				return tokenPair{}, err
			}
		}
		return pair, nil
	}
	d, err := s.store.pollDevice(r.Context(), hashSecret(dc), c.ID, now.Unix(), issue)
	switch {
	case errors.Is(err, errPending):
		s.writeError(w, r, oerr("authorization_pending", "the user has not answered yet"))
	case errors.Is(err, errSlowDown):
		s.writeError(w, r, oerr("slow_down", "polling too often; wait %d seconds longer between requests", 5))
	case errors.Is(err, errDenied):
		s.writeError(w, r, oerr(errAccessDenied, "the user denied the request"))
	case errors.Is(err, errExpired):
		s.writeError(w, r, oerr("expired_token", "the device code has expired; start again"))
	case errors.Is(err, errNotFound), errors.Is(err, errWrongClient):
		s.writeError(w, r, oerr(errInvalidGrant, "unknown device code, or one issued to another client"))
	case err != nil:
		s.writeError(w, r, err)
	default:
		s.logIssued(r, grantDeviceCode, c.ID, d.UserID, d.Scope)
		writeJSON(w, http.StatusOK, resp)
	}
}

// limiter counts events per key in a sliding window: failed user-code entries per user,
// open registrations per source address.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	hits   map[string][]time.Time
}

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, hits: map[string][]time.Time{}}
}

// take records one event for key unless key has used up its events in the window ending at
// now (false, nothing recorded): the check and the record in one step, so that concurrent
// attempts cannot all pass the check. A take for an attempt that turns out good is given
// back with giveBack.
func (l *limiter) take(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.hits) >= maxBackoffKeys { // a flood of keys (addresses): forget the stale ones
		for k, h := range l.hits {
			if len(h) == 0 || now.Sub(h[len(h)-1]) >= l.window {
				delete(l.hits, k)
			}
		}
	}
	h := slices.DeleteFunc(l.hits[key], func(t time.Time) bool { return now.Sub(t) >= l.window })
	if len(h) >= l.max {
		l.hits[key] = h
		return false
	}
	l.hits[key] = append(h, now)
	return true
}

// giveBack removes the latest event of key (an attempt take counted that succeeded).
func (l *limiter) giveBack(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.hits[key]; len(h) > 1 {
		l.hits[key] = h[:len(h)-1]
	} else {
		delete(l.hits, key)
	}
}

// devicePage is the code entry form's data.
type devicePage struct {
	pageData
	UserCode, Error string
}

// handleDevicePage asks a signed-in user for the code their device shows.
func (s *server) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if !ok {
		s.redirectToLogin(w, r, r.URL.RequestURI(), "")
		return
	}
	s.render(w, http.StatusOK, "device", devicePage{pageData: s.pageData(sess, "device"), UserCode: r.URL.Query().Get("user_code")})
}

// handleDevice checks a typed user code and shows the normal consent page for it. Failed
// entries are limited per user, so codes cannot be guessed.
func (s *server) handleDevice(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.session(r)
	if !ok {
		s.errorPage(w, http.StatusForbidden, "Session ended", "You are no longer signed in.")
		return
	}
	page := devicePage{pageData: s.pageData(sess, "device"), UserCode: r.PostForm.Get("user_code")}
	if !s.checkCSRF(r, sess.Hash, "device") {
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "device", page)
		return
	}
	now, key := s.now(), sess.User.Sub
	if !s.deviceTries.take(key, now) { // counted before the code is looked up
		w.Header().Set("Retry-After", "900")
		page.Error = "Too many wrong codes. Wait 15 minutes, then try again."
		s.render(w, http.StatusTooManyRequests, "device", page)
		return
	}
	code, ok := normalizeUserCode(page.UserCode)
	var hash []byte
	var d deviceCode
	err := errNotFound
	if ok {
		hash, d, err = s.store.pendingDevice(r.Context(), hashSecret(code), now.Unix())
	}
	if !errors.Is(err, errNotFound) {
		s.deviceTries.giveBack(key)
	}
	if errors.Is(err, errNotFound) {
		page.Error = "That code is not valid, was already used, or has expired. Check the code on your device."
		s.render(w, http.StatusBadRequest, "device", page)
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	c, err := s.store.clientByID(r.Context(), d.ClientID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	if s.needsMFA(sess.User, c, "") && !amrHas(sess.AMR, "mfa") { // mfa.go
		s.stepUp(w, r, sess, "/device?user_code="+url.QueryEscape(page.UserCode))
		return
	}
	req := authRequest{ClientID: c.ID, Scopes: strings.Fields(d.Scope), DeviceHash: hash, Resources: strings.Fields(d.Resource)}
	if s.refuseOutsider(w, r, c, req, sess) {
		return
	}
	s.showConsent(w, r, c, req, sess)
}
