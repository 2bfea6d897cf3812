package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// oauthd check URL: a self-test of a live deployment, seen from outside, as a checklist.

// checkResult is one line of the checklist.
type checkResult struct {
	Status string // "ok", "warn" or "FAIL"
	What   string
}

// runCheck is "oauthd check [-client ID -secret SECRET] [-timeout 10s] URL". The secret may
// come from OAUTHD_SECRET instead of the command line (where ps would show it).
func runCheck(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	id := fs.String("client", "", "client_id for a client_credentials and introspection round trip")
	secret := fs.String("secret", "", "that client's secret (or OAUTHD_SECRET)")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each request")
	if err := parseFlags(fs, args, getenv, "client", "secret"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("check: want the deployment's URL, e.g. oauthd check https://auth.example")
	}
	if (*id == "") != (*secret == "") {
		return usageError("check: -client and -secret go together")
	}
	hc := &http.Client{Timeout: *timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	results := checkDeployment(ctx, hc, fs.Arg(0), *id, *secret, time.Now)
	failed := 0
	for _, r := range results {
		fmt.Fprintf(stdout, "%-5s %s\n", r.Status, r.What)
		if r.Status == "FAIL" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d checks failed", failed, len(results))
	}
	fmt.Fprintf(stdout, "all %d checks passed\n", len(results))
	return nil
}

// checkDeployment runs the checklist against the deployment at raw.
func checkDeployment(ctx context.Context, hc *http.Client, raw, clientID, secret string, now func() time.Time) []checkResult {
	var out []checkResult
	add := func(status, format string, args ...any) {
		out = append(out, checkResult{status, fmt.Sprintf(format, args...)})
	}
	base, err := normalizeIssuer(strings.TrimSuffix(raw, "/"))
	if err != nil {
		add("FAIL", "the URL: %v", err)
		return out
	}
	u, _ := url.Parse(base)
	loopback := isLoopbackName(u.Hostname())

	get := func(path string) (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", path, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp, body, err
	}
	post := func(endpoint string, form url.Values, id, sec string) (int, map[string]any, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", endpoint, strings.NewReader(form.Encode()))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if id != "" {
			req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(sec))
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m)
		return resp.StatusCode, m, nil
	}

	// Discovery, TLS and the clock, from the first request.
	resp, body, err := get(base + "/.well-known/openid-configuration")
	if err != nil {
		var cerr *tls.CertificateVerificationError
		if errors.As(err, &cerr) {
			add("FAIL", "TLS: the certificate does not verify: %v", cerr.Err)
		} else {
			add("FAIL", "discovery: %s is unreachable: %v", base, err)
		}
		return out
	}
	var meta map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &meta) != nil {
		add("FAIL", "discovery: /.well-known/openid-configuration answered %d, not JSON metadata", resp.StatusCode)
		return out
	}
	add("ok", "discovery: /.well-known/openid-configuration answers")
	// RFC 8414 §3.1: for an issuer with a path, the well-known part goes between host and path.
	if r2, b2, err := get(u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + u.Path); err != nil || r2.StatusCode != 200 || !json.Valid(b2) {
		add("FAIL", "discovery: /.well-known/oauth-authorization-server does not answer JSON (RFC 8414)")
	} else {
		add("ok", "discovery: /.well-known/oauth-authorization-server answers")
	}
	if iss, _ := meta["issuer"].(string); iss == base {
		add("ok", "issuer: %s matches the URL", iss)
	} else {
		add("FAIL", "issuer: the metadata says %q but the deployment was reached at %s: clients will reject its tokens (set -issuer %s, or reach it at its issuer)", iss, base, base)
	}
	switch {
	case resp.TLS != nil:
		left := time.Until(resp.TLS.PeerCertificates[0].NotAfter)
		if left < 14*24*time.Hour {
			add("warn", "TLS: the certificate is valid but expires in %s", left.Round(time.Hour))
		} else {
			add("ok", "TLS: the certificate verifies (expires in %d days)", int(left.Hours()/24))
		}
	case loopback:
		add("warn", "TLS: plain http, acceptable only on this loopback address")
	default:
		add("FAIL", "TLS: plain http on a network address: passwords and tokens travel in clear text")
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		add("warn", "clock: the server sent no Date header")
	} else if skew := now().Sub(d); skew > time.Minute || skew < -time.Minute {
		add("FAIL", "clock: the server's clock is %s off from this machine's: token lifetimes and ID token times will be wrong (run NTP)", skew.Round(time.Second))
	} else {
		add("ok", "clock: within a minute of this machine's")
	}

	// Endpoints answer, and answer like an authorization server.
	endpoint := func(name string) string { s, _ := meta[name].(string); return s }
	if r, b, err := get(endpoint("jwks_uri")); err != nil || r.StatusCode != 200 || !strings.Contains(string(b), `"kid"`) {
		add("FAIL", "endpoints: jwks_uri %s does not list signing keys", endpoint("jwks_uri"))
	} else {
		add("ok", "endpoints: jwks_uri lists signing keys")
	}
	for _, name := range []string{"token_endpoint", "introspection_endpoint", "revocation_endpoint"} {
		code, m, err := post(endpoint(name), url.Values{}, "", "")
		if e, _ := m["error"].(string); err != nil || e == "" || code < 400 || code >= 500 {
			add("FAIL", "endpoints: %s %s does not answer an OAuth error to an empty request (%d, %v)", name, endpoint(name), code, err)
		} else {
			add("ok", "endpoints: %s answers", name)
		}
	}
	if r, _, err := get(endpoint("authorization_endpoint")); err != nil || r.StatusCode >= 500 {
		add("FAIL", "endpoints: authorization_endpoint does not answer")
	} else {
		add("ok", "endpoints: authorization_endpoint answers")
	}
	if r, _, err := get(base + "/healthz"); err != nil || r.StatusCode != 200 {
		add("FAIL", "health: /healthz says the database is unreachable")
	} else {
		add("ok", "health: /healthz reports the database reachable")
	}

	// Cookies: the login page sets its browser cookie; behind https it must be Secure.
	if r, _, err := get(base + "/login"); err == nil {
		insecure := []string{}
		for _, c := range r.Cookies() {
			if !c.Secure {
				insecure = append(insecure, c.Name)
			}
		}
		switch {
		case len(r.Cookies()) == 0:
			add("warn", "cookies: the login page set none to look at")
		case len(insecure) == 0:
			add("ok", "cookies: Secure")
		case u.Scheme == "https":
			add("FAIL", "cookies: %s not Secure although the issuer is https", strings.Join(insecure, ", "))
		case loopback:
			add("warn", "cookies: not Secure (plain http, loopback)")
		default:
			add("FAIL", "cookies: not Secure: a session cookie crosses the network in clear text")
		}
	}

	// A round trip with a client, when one is given. The secret goes only to endpoints under
	// the URL given (same scheme and host): a discovery document answered by someone else (a
	// proxy or host name gone wrong) must not collect it, nor an http endpoint of an https one.
	if clientID == "" {
		return out
	}
	for _, name := range []string{"token_endpoint", "introspection_endpoint", "revocation_endpoint"} {
		if eu, err := url.Parse(endpoint(name)); err != nil || eu.Scheme != u.Scheme || !strings.EqualFold(eu.Host, u.Host) {
			add("FAIL", "client: the %s %q is not under %s: the client secret is not sent there", name, endpoint(name), base)
			return out
		}
	}
	code, m, err := post(endpoint("token_endpoint"), url.Values{"grant_type": {"client_credentials"}}, clientID, secret)
	tok, _ := m["access_token"].(string)
	switch e, _ := m["error"].(string); {
	case err != nil:
		add("FAIL", "client: the token endpoint is unreachable: %v", err)
		return out
	case code == 200 && tok != "":
		add("ok", "client: client_credentials issued a token")
	case e == errInvalidClient:
		add("FAIL", "client: %s was refused: wrong client_id or secret", clientID)
		return out
	case e == errUnauthorizedClient:
		add("warn", "client: %s may not use client_credentials; checking its credentials with introspection only", clientID)
	default:
		add("FAIL", "client: client_credentials answered %d %v", code, m)
	}
	probe := tok
	if probe == "" {
		probe = "not-a-token"
	}
	code, m, err = post(endpoint("introspection_endpoint"), url.Values{"token": {probe}}, clientID, secret)
	switch {
	case err != nil || code != 200:
		add("FAIL", "client: introspection answered %d %v %v", code, m["error"], err)
	case tok != "" && m["active"] != true:
		add("FAIL", "client: introspection says the token just issued is not active")
	default:
		add("ok", "client: introspection round trip works")
	}
	if tok != "" {
		if code, _, err := post(endpoint("revocation_endpoint"), url.Values{"token": {tok}}, clientID, secret); err != nil || code != 200 {
			add("warn", "client: the test token could not be revoked (%d %v); it expires by itself", code, err)
		}
	}
	return out
}
