package main

// Forward auth (issue 16): oauthd answers the reverse proxy's per-request check for apps
// that know nothing of OAuth (Caddy's forward_auth, Traefik's ForwardAuth, nginx's
// auth_request), with the sign-in, second factor and group rules of every other app. A
// protected app is a client registered by its origins (scheme, host, port) instead of
// redirect URIs; it has no secret and no grant.
//
// No cookie is shared across domains. The check reads the original request from
// X-Forwarded-Proto, -Host, -Uri and -Method (RFC 7239's predecessors, as the proxies send
// them), believed only from a -trusted-proxy. Without a valid app session it answers 302 (or
// 401 for nginx, whose error_page turns it into the redirect) to /oauth/forward-auth/start on
// oauthd's host, and sets a state cookie on the app's host. The start page runs the usual
// sign-in, second factor and access rule, then sends the browser to the app's
// /.oauthd/callback with a one-time code (60 s) and the state: that request passes through the
// proxy's check too, which redeems the code, bound to the origin and to the state cookie, and
// answers 302 to the original URL with the app-session cookie for that host alone. It is the
// authorization code flow's shape (RFC 6749 §4.1, state as in §10.12) with the proxy in the
// client's place. A check with a valid app session writes nothing and hashes no password
// (store_forwardauth.go keeps app sessions in a cache); it answers 200 with Remote-User,
// Remote-Name, Remote-Email, Remote-Groups and Remote-Sub, every one of them always set.

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Forward-auth constants.
const (
	forwardCallbackPath = "/.oauthd/callback" // on the app's host; the proxy's check sees it in X-Forwarded-Uri
	forwardStateTTL     = 15 * time.Minute    // how long a sign-in started at an app may take
	maxForwardRD        = 4096                // a longer original URL returns to the app's root
)

// ---- origins

// hostOrigin is the origin of scheme and host[:port] (RFC 6454 §4): the host in lower case,
// an IPv6 address in its canonical form in brackets, a default port (443 for https, 80 for
// http) left out. Anything that is not a plain host name or IP address is refused, wildcards
// included.
func hostOrigin(scheme, hostport string) (string, error) {
	if hostport == "" || len(hostport) > 300 {
		return "", errors.New("has no host, or a host longer than 300 characters")
	}
	for _, c := range hostport {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_:[]", c)) {
			return "", fmt.Errorf("has a host with the character %q (no wildcards, paths or user information)", c)
		}
	}
	host, port := hostport, ""
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", errors.New("has an IPv6 address without its closing bracket")
		}
		ip, err := netip.ParseAddr(hostport[1:end])
		if err != nil || !ip.Is6() {
			return "", errors.New("has an invalid IPv6 address")
		}
		host = "[" + ip.String() + "]"
		switch rest := hostport[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port = rest[1:]
		default:
			return "", errors.New("has characters after its IPv6 address")
		}
	} else {
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port = hostport[:i], hostport[i+1:]
		}
		host = strings.ToLower(host)
		if host == "" || strings.ContainsAny(host, ":[]") || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
			return "", errors.New("has an invalid host name")
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(port, "0") {
			return "", errors.New("has an invalid port")
		}
		if scheme == "https" && n == 443 || scheme == "http" && n == 80 {
			port = ""
		}
	}
	if port != "" {
		return scheme + "://" + host + ":" + port, nil
	}
	return scheme + "://" + host, nil
}

// normalizeOrigin checks an origin a protected app is registered with: https (or http on a
// loopback host, as for redirect URIs), a host and perhaps a port, nothing else; it returns
// it in hostOrigin's form.
func normalizeOrigin(raw string) (string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	if !ok || scheme != "https" && scheme != "http" {
		return "", fmt.Errorf("the origin %q must start with https:// (e.g. https://app.example.com)", raw)
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#@") {
		return "", fmt.Errorf("the origin %q must be scheme, host and port only: no path, query, fragment or user", raw)
	}
	o, err := hostOrigin(scheme, rest)
	if err != nil {
		return "", fmt.Errorf("the origin %q %v", raw, err)
	}
	if scheme == "http" {
		u, _ := url.Parse(o)
		if h := u.Hostname(); !isLoopbackHost(h) && h != "localhost" {
			return "", fmt.Errorf("the origin %q uses http on a non-loopback host; use https (the app-session cookie and the one-time code would cross the network in clear)", raw)
		}
	}
	return o, nil
}

// applyForward validates a protected app's registration (clientSpec.apply calls it for a
// spec with origins): its origins, and none of an OAuth client's settings, which would mean
// nothing here. It has no secret (public) and no grant.
func (sp clientSpec) applyForward(c *client) error {
	switch {
	case len(sp.RedirectURIs) > 0 || len(sp.PostLogoutURIs) > 0:
		return badSpec("a protected app (forward auth) has no redirect URIs: the proxy sends its users to oauthd")
	case len(sp.GrantTypes) > 0 || strings.TrimSpace(sp.Scope) != "" || sp.AlwaysRefresh:
		return badSpec("a protected app (forward auth) has no grants, scopes or refresh tokens: it never sees a token")
	}
	var origins []string
	for _, raw := range sp.ForwardOrigins {
		o, err := normalizeOrigin(strings.TrimSpace(raw))
		if err != nil {
			return badSpec("%v", err)
		}
		origins = append(origins, o)
	}
	slices.Sort(origins)
	origins = slices.Compact(origins)
	for what, u := range map[string]string{"logo URI": sp.LogoURI, "homepage": sp.ClientURI} {
		if err := validateWebURI(u); err != nil {
			return badSpec("%s %q %v", what, u, err)
		}
	}
	c.Name, c.Description = strings.TrimSpace(sp.Name), strings.TrimSpace(sp.Description)
	c.ForwardOrigins, c.Public, c.SecretHash = origins, true, nil
	c.RedirectURIs, c.PostLogoutURIs, c.GrantTypes, c.Scopes, c.AlwaysRefresh = nil, nil, nil, nil, false
	c.IDTokenAlg, c.LogoURI, c.ClientURI, c.Dynamic = "RS256", sp.LogoURI, sp.ClientURI, false
	if sp.OwnerID != 0 {
		c.OwnerID = sp.OwnerID
	}
	if sp.RequireMFA != nil {
		c.RequireMFA = *sp.RequireMFA
	}
	return nil
}

// ---- the check

// forwarded is the original request as the proxy describes it.
type forwarded struct {
	Origin string // scheme://host[:port], hostOrigin's form
	Secure bool   // https: cookies are Secure and __Host- prefixed
	URI    string // the request target, path and query
	Path   string // the path of URI, as sent (not unescaped)
	Query  string // the raw query of URI
}

// parseForwarded reads the original request from X-Forwarded-Proto, -Host, -Uri and
// -Method alone (Caddy keeps the original query string on the check request itself, so the
// check's own URL says nothing). Each may appear once; the message says what the proxy must
// send instead.
func parseForwarded(h http.Header) (forwarded, string) {
	var f forwarded
	// The names are in canonical form: the map is read directly (this is on every request).
	vals := [4][]string{h["X-Forwarded-Proto"], h["X-Forwarded-Host"], h["X-Forwarded-Uri"], h["X-Forwarded-Method"]}
	for i, name := range [4]string{"X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Method"} {
		if len(vals[i]) > 1 {
			return f, name + " is repeated: the proxy must send it once, replacing any value from the browser."
		}
	}
	first := func(v []string) string {
		if len(v) == 0 {
			return ""
		}
		return v[0]
	}
	proto, host, uri := strings.ToLower(strings.TrimSpace(first(vals[0]))), strings.TrimSpace(first(vals[1])), first(vals[2])
	if proto == "" || host == "" || uri == "" {
		return f, "The proxy must send X-Forwarded-Proto (http or https), X-Forwarded-Host (the host the browser asked for) and X-Forwarded-Uri (its path and query) " +
			"with every check; this request lacks " + strings.Join(missing(map[string]string{"X-Forwarded-Proto": proto, "X-Forwarded-Host": host, "X-Forwarded-Uri": uri}), " and ") +
			". See the forward-auth configurations in oauthd's README."
	}
	if proto != "https" && proto != "http" {
		return f, "X-Forwarded-Proto must be http or https."
	}
	if strings.Contains(host, ",") {
		return f, "X-Forwarded-Host must name one host (the proxy must replace the browser's value, not append to it)."
	}
	o, err := hostOrigin(proto, host)
	if err != nil {
		return f, "X-Forwarded-Host " + err.Error() + "."
	}
	// The request target as sent (RFC 9112 §3.2.1 origin-form): printable ASCII from a /, no
	// fragment. Its path is compared as sent: an escaped callback path is just a path.
	if uri[0] != '/' || strings.IndexFunc(uri, func(c rune) bool { return c <= ' ' || c > '~' || c == '#' }) >= 0 {
		return f, "X-Forwarded-Uri must be the request's path and query, starting with /, in printable ASCII."
	}
	path, query, _ := strings.Cut(uri, "?")
	if m := first(vals[3]); m != "" && strings.IndexFunc(m, func(c rune) bool { return c <= ' ' || c > '~' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) }) >= 0 {
		return f, "X-Forwarded-Method is not an HTTP method."
	}
	return forwarded{Origin: o, Secure: proto == "https", URI: uri, Path: path, Query: query}, ""
}

// missing lists the names whose values are empty, in a stable order.
func missing(vals map[string]string) []string {
	var out []string
	for k, v := range vals {
		if v == "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// handleForwardAuth answers Caddy's forward_auth and Traefik's ForwardAuth: 200 with the
// Remote-* headers, 302 to the sign-in, 403 with a page for a user who may not use the app.
func (s *server) handleForwardAuth(w http.ResponseWriter, r *http.Request) {
	s.forwardCheck(w, r, false)
}

// handleAuthRequest answers nginx's auth_request: as handleForwardAuth, but 401 (with the
// sign-in URL in Location, for auth_request_set and error_page) instead of 302: a subrequest
// may only answer 2xx, 401 or 403.
func (s *server) handleAuthRequest(w http.ResponseWriter, r *http.Request) {
	s.forwardCheck(w, r, true)
}

// forwardCheck is the check of one request to a protected app.
func (s *server) forwardCheck(w http.ResponseWriter, r *http.Request, nginx bool) {
	w.Header().Set("Cache-Control", "no-store")
	peer, ok := s.fromProxy(r)
	if !ok {
		forwardText(w, http.StatusForbidden, "oauthd answers forward-auth checks only from a reverse proxy named in -trusted-proxy, because it believes the proxy's X-Forwarded-* headers; "+
			"this check came from "+peer+". If that is your proxy, start oauthd with -trusted-proxy "+peer+" (or its network).")
		return
	}
	f, msg := parseForwarded(r.Header)
	if msg != "" {
		forwardText(w, http.StatusBadRequest, msg)
		return
	}
	ctx := r.Context()
	c, err := s.store.forwardClient(ctx, f.Origin)
	if errors.Is(err, errNotFound) { // (oauthd's own origin never gets a code: the start page refuses it)
		s.log.Info("forward auth refused: no protected app has this origin", "origin", f.Origin)
		forwardText(w, http.StatusForbidden, "No protected app is registered for "+f.Origin+". Register it with: oauthd client add -name NAME -forward-auth "+f.Origin)
		return
	} else if err != nil {
		s.log.Error("forward auth: reading the app failed", "origin", f.Origin, "cause", err)
		forwardText(w, http.StatusServiceUnavailable, "The sign-in service could not check this request; try again shortly.")
		return
	}
	if f.Path == forwardCallbackPath {
		if nginx {
			// A subrequest cannot pass the callback's redirect and cookie on: the code is left
			// for the plain request the README's configuration makes.
			forwardText(w, http.StatusForbidden, "nginx must send "+forwardCallbackPath+" to /oauth/forward-auth as a plain proxied request (proxy_pass), not through auth_request; see the README's nginx configuration.")
			return
		}
		s.forwardCallback(w, r, f, c)
		return
	}
	now := s.now().Unix()
	if ck, err := r.Cookie(appCookieName(f.Secure)); err == nil && len(ck.Value) == 43 {
		a, err := s.store.cachedAppSession(ctx, hashSecret(ck.Value), now)
		if err != nil && !errors.Is(err, errNotFound) {
			s.log.Error("forward auth: reading an app session failed", "origin", f.Origin, "cause", err)
			forwardText(w, http.StatusServiceUnavailable, "The sign-in service could not check this request; try again shortly.")
			return
		}
		// A session of another origin (cookies do not tell ports apart) or one that no longer
		// meets the app's second-factor rule is none: the sign-in runs again.
		if err == nil && a.Origin == f.Origin && a.ClientID == c.ID && !(s.needsMFA(a.User, c, "") && !amrHas(a.AMR, "mfa")) {
			allowed, err := s.mayUse(ctx, a.User, c)
			if err != nil {
				s.log.Error("forward auth: reading the user's groups failed", "origin", f.Origin, "cause", err)
				forwardText(w, http.StatusServiceUnavailable, "The sign-in service could not check this request; try again shortly.")
				return
			}
			if !allowed {
				s.log.Info("forward auth refused: the user is in none of the app's groups", "client_id", c.ID, "user", a.User.Username)
				s.forwardDenied(w, r, c, a.User)
				return
			}
			s.writeRemote(w, r, a.User)
			return
		}
	}
	s.signInFirst(w, r, f, nginx)
}

// writeRemote answers 200 with every Remote-* header set from the user, each of them always,
// empty when unknown (Caddy 2.6's copy_headers passes its placeholder text upstream for a
// missing one): the username, the display name, the email if it is verified (an unverified
// one could be anybody's), the groups comma-separated, and the sub. Nothing the browser sent
// is reflected.
func (s *server) writeRemote(w http.ResponseWriter, r *http.Request, u user) {
	var groups []string
	if acc, err := s.store.cachedAccess(r.Context(), u.ID); err == nil {
		groups = acc.Groups
	} else {
		s.log.Error("forward auth: reading the user's groups failed", "user", u.Username, "cause", err)
		forwardText(w, http.StatusServiceUnavailable, "The sign-in service could not check this request; try again shortly.")
		return
	}
	email := ""
	if u.EmailVerified {
		email = u.Email
	}
	h := w.Header()
	h["Remote-User"] = []string{u.Username}
	h["Remote-Name"] = []string{u.Name}
	h["Remote-Email"] = []string{email}
	h["Remote-Groups"] = []string{strings.Join(groups, ",")}
	h["Remote-Sub"] = []string{u.Sub}
	w.WriteHeader(http.StatusOK)
}

// signInFirst answers a request without a valid app session. A navigation gets a new state
// in a cookie on the app's host (named after the state, so that sign-ins started in several
// tabs do not overwrite each other) and the way to the start page: 302 for Caddy and Traefik,
// 401 with Location for nginx. A request no browser would follow to a sign-in page (fetch,
// XMLHttpRequest, WebSocket: Sec-Fetch-Mode other than navigate) gets 401 and no cookie, so
// that an app polling in the background cannot pile up state cookies.
func (s *server) signInFirst(w http.ResponseWriter, r *http.Request, f forwarded, nginx bool) {
	rd := f.Origin + f.URI
	if len(rd) > maxForwardRD {
		rd = f.Origin + "/"
	}
	state := newSecret()
	start := s.cfg.Issuer + "/oauth/forward-auth/start?" + url.Values{"rd": {rd}, "state": {state}}.Encode()
	nav := navigation(r.Header)
	if nav {
		http.SetCookie(w, &http.Cookie{Name: stateCookieName(f.Secure, state), Value: state, Path: "/", MaxAge: int(forwardStateTTL / time.Second),
			HttpOnly: true, Secure: f.Secure, SameSite: http.SameSiteLaxMode})
	}
	switch {
	case nginx:
		w.Header().Set("Location", start)
		forwardText(w, http.StatusUnauthorized, "Sign-in required.")
	case nav:
		http.Redirect(w, r, start, http.StatusFound)
	default:
		forwardText(w, http.StatusUnauthorized, "Sign-in required: open "+f.Origin+"/ in the browser to sign in.")
	}
}

// navigation reports whether the browser asked for a page it shows (so that a redirect to
// the sign-in makes sense): no Sec-Fetch-Mode (older browsers, other clients) or "navigate",
// and not an XMLHttpRequest.
func navigation(h http.Header) bool {
	if m := h.Get("Sec-Fetch-Mode"); m != "" && m != "navigate" {
		return false
	}
	return !strings.EqualFold(h.Get("X-Requested-With"), "XMLHttpRequest")
}

// forwardCallback redeems the one-time code at the app's /.oauthd/callback: the state in the
// URL must be the one in this browser's state cookie on the app's host, and the code must
// have been issued for this origin and that state (RFC 6749 §10.12: a code injected into
// another browser finds no cookie there). It answers 302 to the original URL with the
// app-session cookie, or an error page; never 2xx, which would let the request through.
func (s *server) forwardCallback(w http.ResponseWriter, r *http.Request, f forwarded, c client) {
	retry := []navLink{{Href: f.Origin + "/", Text: "Open " + c.Name + " again"}}
	q, err := url.ParseQuery(f.Query)
	code, state := q.Get("code"), q.Get("state")
	if err != nil || len(q["code"]) != 1 || len(q["state"]) != 1 || code == "" || !validState(state) {
		s.forwardPage(w, http.StatusBadRequest, forwardPageData{Title: "Sign-in link not valid", Message: "This sign-in link is incomplete or repeats its parameters.", Next: retry})
		return
	}
	ck, err := r.Cookie(stateCookieName(f.Secure, state))
	if err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 {
		s.log.Info("forward auth callback refused: no state cookie for this sign-in", "client_id", c.ID, "origin", f.Origin, "from", s.sourceAddr(r))
		s.forwardPage(w, http.StatusBadRequest, forwardPageData{Title: "Sign-in not recognised",
			Message: "This sign-in was started in another browser, or more than 15 minutes ago. Open " + c.Name + " again to sign in.", Next: retry})
		return
	}
	now := s.now()
	fc, err := s.store.takeForwardCode(r.Context(), tokenKey(code), f.Origin, hashSecret(state), now.Unix())
	if err != nil {
		if isStorageFault(err) {
			s.log.Error("forward auth callback failed", "client_id", c.ID, "cause", err)
			s.forwardPage(w, http.StatusServiceUnavailable, forwardPageData{Title: "Temporarily unavailable", Message: "The sign-in could not be completed. Try again in a moment.", Next: retry})
			return
		}
		s.log.Info("forward auth callback refused", "client_id", c.ID, "origin", f.Origin, "reason", err.Error(), "from", s.sourceAddr(r))
		s.forwardPage(w, http.StatusBadRequest, forwardPageData{Title: "Sign-in link not valid",
			Message: "This sign-in link was already used, has expired (it works for 60 seconds) or belongs to another app. Open " + c.Name + " again to sign in.", Next: retry})
		return
	}
	u, err := s.store.userByID(r.Context(), fc.UserID)
	allowed := false
	if err == nil && fc.ClientID == c.ID {
		allowed, err = s.mayUse(r.Context(), u, c) // the user may have left the app's groups meanwhile
	}
	if err != nil {
		s.log.Error("forward auth callback failed", "client_id", c.ID, "cause", err)
		s.forwardPage(w, http.StatusServiceUnavailable, forwardPageData{Title: "Temporarily unavailable", Message: "The sign-in could not be completed. Try again in a moment.", Next: retry})
		return
	}
	if !allowed {
		s.forwardDenied(w, r, c, u)
		return
	}
	tok := newSecret()
	expires, err := s.store.createAppSession(r.Context(), hashSecret(tok), fc, now.Unix())
	if errors.Is(err, errSessionEnded) {
		s.forwardPage(w, http.StatusBadRequest, forwardPageData{Title: "Session ended",
			Message: "You were signed out (or your password was changed) before the sign-in reached " + c.Name + ". Open it again to sign in.", Next: retry})
		return
	} else if err != nil {
		s.log.Error("forward auth: storing the app session failed", "client_id", c.ID, "cause", err)
		s.forwardPage(w, http.StatusServiceUnavailable, forwardPageData{Title: "Temporarily unavailable", Message: "The sign-in could not be completed. Try again in a moment.", Next: retry})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: appCookieName(f.Secure), Value: tok, Path: "/", MaxAge: int(max(expires-now.Unix(), 1)),
		HttpOnly: true, Secure: f.Secure, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: stateCookieName(f.Secure, state), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: f.Secure, SameSite: http.SameSiteLaxMode})
	s.log.Info("forward auth sign-in", "client_id", c.ID, "origin", f.Origin, "user", u.Username)
	s.record(r, "sign-in", u.Username, c.ID, "to the protected app at "+f.Origin)
	http.Redirect(w, r, fc.RD, http.StatusFound)
}

// isStorageFault tells a database failure from a refused code.
func isStorageFault(err error) bool {
	return !errors.Is(err, errNotFound) && !errors.Is(err, errExpired) && !errors.Is(err, errCodeOrigin) && !errors.Is(err, errCodeState)
}

// ---- the start page, on oauthd's host

// handleForwardAuthStart is where the check sends a browser without an app session: rd is
// the original URL, state the value of the cookie just set on the app's host. It signs the
// user in (with the second factor the app or the policy needs), applies the app's access
// rule, and sends the browser to the app's callback with a one-time code. Only an origin
// registered for a protected app is ever a target; anything else gets an error page.
// Protected apps are registered by administrators, who vouch for them: no consent page.
func (s *server) handleForwardAuthStart(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k, v := range q {
		if len(v) > 1 {
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The sign-in link repeats the parameter "+k+".")
			return
		}
	}
	rd, state := q.Get("rd"), q.Get("state")
	u, err := url.Parse(rd)
	if rd == "" || err != nil || !u.IsAbs() || u.User != nil || u.Opaque != "" || len(rd) > maxForwardRD {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The sign-in link does not say which app it is for (rd must be the absolute URL of a protected app's page).")
		return
	}
	origin, err := hostOrigin(strings.ToLower(u.Scheme), u.Host)
	var c client
	if err == nil && (u.Scheme == "https" || u.Scheme == "http") {
		c, err = s.store.forwardClient(r.Context(), origin)
	} else {
		err = errNotFound
	}
	if errors.Is(err, errNotFound) || err == nil && s.ownOrigin(origin) {
		s.log.Info("forward auth start refused: not a protected origin", "origin", origin)
		s.errorPage(w, http.StatusBadRequest, "Unknown application", "No protected app is registered for this address, so the sign-in cannot return there.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	// The way back is rebuilt from the checked origin: nothing a browser could read as
	// another host survives from the link.
	rd = origin + u.RequestURI()
	if u.Path == forwardCallbackPath {
		rd = origin + "/"
	}
	if !validState(state) {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The sign-in link has no valid state. Open "+c.Name+" again to sign in.")
		return
	}
	sess, ok := s.session(r)
	if !ok {
		s.redirectToLogin(w, r, r.URL.RequestURI(), "")
		return
	}
	if s.needsMFA(sess.User, c, "") && !amrHas(sess.AMR, "mfa") {
		s.stepUp(w, r, sess, r.URL.RequestURI())
		return
	}
	if allowed, err := s.mayUse(r.Context(), sess.User, c); err != nil {
		s.serverErrorPage(w, r, err)
		return
	} else if !allowed {
		s.log.Info("forward auth refused: the user is in none of the app's groups", "client_id", c.ID, "user", sess.User.Username)
		s.forwardDenied(w, r, c, sess.User)
		return
	}
	now := s.now()
	code := newTokenValue(now)
	err = s.store.issueForwardCode(r.Context(), tokenKey(code), forwardCode{ClientID: c.ID, Origin: origin, RD: rd, UserID: sess.User.ID,
		SessionHash: sess.Hash, StateHash: hashSecret(state), ExpiresAt: now.Add(s.cfg.CodeTTL).Unix()}, now.Unix())
	if errors.Is(err, errSessionEnded) {
		s.errorPage(w, http.StatusForbidden, "Session ended", "You were signed out (or your password was changed) meanwhile. Open "+c.Name+" again to sign in.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("forward auth code issued", "client_id", c.ID, "origin", origin, "user", sess.User.Username)
	http.Redirect(w, r, origin+forwardCallbackPath+"?"+url.Values{"code": {code}, "state": {state}}.Encode(), http.StatusFound)
}

// validState checks the form of a state: 43 characters of base64url (newSecret's).
func validState(v string) bool {
	if len(v) != 43 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ---- answers

// forwardPageData is a page shown for a protected app: on the app's host (answered through
// the proxy) or on oauthd's, so every URL in it is absolute.
type forwardPageData struct {
	Style, Icon, Home, Logo string // absolute URLs on oauthd's host
	Title, Message          string
	Denied                  bool     // the no-access page
	App, User               string   // Denied: the app and who is signed in
	Admins                  []string // Denied: whom to ask
	Next                    []navLink
}

// forwardPage renders a forward-auth page with oauthd's stylesheet and links as absolute
// URLs, and a Content-Security-Policy that allows them from oauthd's origin, since the page
// may be shown under the app's.
func (s *server) forwardPage(w http.ResponseWriter, status int, p forwardPageData) {
	iss, o := s.cfg.Issuer, issuerOrigin(s.cfg.Issuer) // the issuer ends with its path (prefix.go)
	p.Style, p.Icon, p.Home = iss+"/static/style.css", iss+"/favicon.ico", iss+"/"
	if l := s.logo.url(); l != "" {
		p.Logo, p.Icon = iss+l, iss+l
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src "+o+"; img-src "+o+"; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	s.render(w, status, "forwardauth_page", p)
}

// forwardDenied shows the no-access page of a signed-in user outside the app's groups (403),
// naming whom to ask.
func (s *server) forwardDenied(w http.ResponseWriter, r *http.Request, c client, u user) {
	admins, err := s.adminNames(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.forwardPage(w, http.StatusForbidden, forwardPageData{Title: "No access to " + c.Name, Denied: true, App: c.Name, User: u.Username, Admins: admins,
		Next: []navLink{{Href: s.cfg.Issuer + "/", Text: "Your account at " + s.cfg.Name}}})
}

// forwardText answers a proxy (or a person behind a misconfigured one) in plain text.
func forwardText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}

// fromProxy reports whether the request's connection comes from a -trusted-proxy, and the
// peer's address.
func (s *server) fromProxy(r *http.Request) (string, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	return host, err == nil && s.trusted(a)
}

// ownOrigin reports whether o is oauthd's own origin, which no protected app may have: the
// issuer's, unless the issuer has a path (prefix.go), whose host oauthd shares with others.
func (s *server) ownOrigin(o string) bool {
	return issuerPath(s.cfg.Issuer) == "" && o == issuerOrigin(s.cfg.Issuer)
}

// issuerOrigin is the scheme and host of the issuer: where oauthd's own pages are.
func issuerOrigin(issuer string) string {
	if u, err := url.Parse(issuer); err == nil {
		return u.Scheme + "://" + u.Host
	}
	return issuer
}

// appCookieName is the app-session cookie's name on an app's host: __Host- prefixed when it
// is https (the prefix requires Secure, Path=/ and no Domain: the cookie is that host's alone).
func appCookieName(secure bool) string {
	if secure {
		return "__Host-oauthd_app"
	}
	return "oauthd_app"
}

// stateCookieName is the name of a sign-in's state cookie on an app's host: one per sign-in,
// so that sign-ins started in several tabs do not overwrite each other.
func stateCookieName(secure bool, state string) string {
	if secure {
		return "__Host-oauthd_state_" + state[:10]
	}
	return "oauthd_state_" + state[:10]
}

// checkForwardForm applies the pages' rules for a protected app before its spec is built:
// only administrators register and edit them (they vouch for them: no consent page), with
// at least one origin, never oauthd's own.
func (s *server) checkForwardForm(sess session, sp clientSpec) error {
	if !sess.User.Admin {
		return &specError{msg: "only administrators put apps behind the proxy's forward auth"}
	}
	if len(sp.ForwardOrigins) == 0 {
		return &specError{msg: "give at least one origin, such as https://app.example.com"}
	}
	for _, raw := range sp.ForwardOrigins {
		if o, err := normalizeOrigin(strings.TrimSpace(raw)); err == nil && s.ownOrigin(o) {
			return &specError{msg: "the origin " + o + " is oauthd's own: a protected app must live on another host"}
		}
	}
	return nil
}
