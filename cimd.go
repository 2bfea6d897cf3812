package main

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a client whose
// client_id is an https URL with a path describes itself in a JSON document served at that
// URL, instead of registering. MCP hosts use this to reach servers they have never met.
//
// The authorization endpoint fetches the document (cached within its Cache-Control, at least
// a minute and at most a day, in a bounded cache) and keeps the client it describes as a row
// of clients, so that codes, grants and tokens reference it as any other; the token endpoint
// uses that row. The fetch follows no redirect, takes at most 5 seconds and 5 KiB, and
// refuses an address that resolves to a loopback, private, link-local or otherwise
// non-public range: the check runs on the address actually dialed (net.Dialer.Control), so
// a DNS answer that changes between lookup and connection (rebinding) cannot get around it.
// Only public clients (token_endpoint_auth_method none, PKCE) may describe themselves so.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Fetch limits of metadata documents.
const (
	metadataMaxBytes     = 5 << 10
	metadataTimeout      = 5 * time.Second
	metadataMinCache     = time.Minute
	metadataMaxCache     = 24 * time.Hour
	metadataCacheEntries = 1000 // documents kept at most
	metadataFetchSlots   = 8    // fetches in flight at most
)

// metadataError is a client ID metadata document that cannot be used; the message is for
// the person at the browser, and names the reason.
type metadataError struct {
	status int
	msg    string
}

func (e *metadataError) Error() string { return e.msg }

// docError makes a metadataError about the document at id.
func docError(status int, id, format string, args ...any) *metadataError {
	return &metadataError{status: status, msg: "The application's client metadata document at " + id + " cannot be used: " + fmt.Sprintf(format, args...) + "."}
}

// cimd fetches and caches metadata documents.
type cimd struct {
	client *http.Client
	slots  chan struct{} // bounds the fetches in flight
	tries  *limiter      // fetches per source address
	max    int           // bound on cached documents

	mu   sync.Mutex
	docs map[string]cachedDoc // by client_id URL
}

// cachedDoc is a validated document, as the client it describes, until expires.
type cachedDoc struct {
	client  client
	expires time.Time
}

// errNonPublicAddress is the dialer's refusal of a non-public address.
var errNonPublicAddress = errors.New("non-public address")

// newCIMD builds the fetcher: no proxy (the address check must see the real peer), no
// redirects, every timeout bounded.
func newCIMD(cfg config) *cimd {
	timeout := cfg.MetadataTimeout
	if timeout == 0 {
		timeout = metadataTimeout
	}
	dialer := &net.Dialer{Timeout: timeout, Control: func(network, address string, _ syscall.RawConn) error {
		if cfg.AllowPrivateClientMetadata {
			return nil
		}
		host, _, err := net.SplitHostPort(address)
		ip, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !publicAddr(ip) {
			return fmt.Errorf("%w %s", errNonPublicAddress, host)
		}
		return nil
	}}
	tlsConfig := cfg.MetadataTLS
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr := &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, MaxIdleConns: 16, IdleConnTimeout: 30 * time.Second}
	return &cimd{
		client: &http.Client{Transport: tr, Timeout: timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		slots: make(chan struct{}, metadataFetchSlots),
		tries: newLimiter(30, time.Minute),
		max:   metadataCacheEntries,
		docs:  map[string]cachedDoc{},
	}
}

// nonPublicPrefixes are ranges net/netip has no predicate for: this network, shared address
// space (CGNAT), IETF protocol assignments, benchmarking, reserved, broadcast, documentation.
var nonPublicPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("2001:db8::/32")}

// nat64 is the well-known NAT64 prefix (RFC 6052): its addresses embed an IPv4 address.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// publicAddr reports whether ip is a public unicast address (not loopback, private,
// link-local, unspecified, multicast or reserved; IPv4 inside IPv6 judged as IPv4).
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || ip == netip.IPv4Unspecified() {
		return false
	}
	for _, p := range nonPublicPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return ip != netip.MustParseAddr("255.255.255.255")
}

// metadataURL reports whether a client_id is a client identifier URL (draft §3): https, with
// a path, no fragment, no user information, no dot segments.
func metadataURL(id string) bool {
	if !strings.HasPrefix(id, "https://") || len(id) > 2000 {
		return false
	}
	u, err := url.Parse(id)
	if err != nil || u.Host == "" || u.User != nil || strings.Contains(id, "#") || u.Path == "" || u.Path == "/" {
		return false
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// metadataHost is the host of a client identifier URL ("" for any other client id): the
// consent page shows it as where the app comes from.
func metadataHost(id string) string {
	if !metadataURL(id) {
		return ""
	}
	u, _ := url.Parse(id)
	return u.Host
}

// authorizeClient is the client of an authorization request: a registered one, or, for a
// client identifier URL, the one its metadata document describes (a *metadataError when
// it cannot be used).
func (s *server) authorizeClient(r *http.Request, id string) (client, error) {
	if !strings.HasPrefix(id, "https://") {
		return s.store.lookupClient(r.Context(), id)
	}
	if !s.cfg.ClientMetadataDocuments {
		return client{}, &metadataError{status: http.StatusBadRequest,
			msg: "This application identifies itself with a client metadata document (" + id + "), which this server does not accept. Ask its administrator to register the application."}
	}
	if !metadataURL(id) {
		return client{}, docError(http.StatusBadRequest, id, "a client identifier URL must be https with a path, and without a fragment, user information or dot segments")
	}
	if err := s.store.fresh(r.Context()); err != nil {
		return client{}, err
	}
	now := s.now()
	if c, ok := s.cimd.cached(id, now); ok {
		return s.keepMetadataClient(r.Context(), c)
	}
	from := s.sourceAddr(r)
	if !s.cimd.tries.take(from, now) { // counted before the fetch
		return client{}, &metadataError{status: http.StatusTooManyRequests, msg: "Too many applications were looked up from your network. Wait a minute and try again."}
	}
	select {
	case s.cimd.slots <- struct{}{}:
		defer func() { <-s.cimd.slots }()
	case <-r.Context().Done():
		return client{}, r.Context().Err()
	case <-time.After(metadataTimeout):
		return client{}, &metadataError{status: http.StatusServiceUnavailable, msg: "The server is busy looking up other applications. Try again in a moment."}
	}
	c, ttl, err := s.cimd.fetch(r.Context(), id)
	if err != nil {
		s.log.Info("client metadata document refused", "client_id", id, "reason", err.Error())
		return client{}, err
	}
	c.CreatedAt = now.Unix()
	if c, err = s.keepMetadataClient(r.Context(), c); err != nil {
		return client{}, err
	}
	s.cimd.put(id, c, now, now.Add(ttl))
	s.log.Info("client metadata document fetched", "client_id", id, "cache", ttl.String())
	return c, nil
}

// keepMetadataClient makes the clients row of a document's client say what the document
// says (written only when it changed) and returns the stored client.
func (s *server) keepMetadataClient(ctx context.Context, c client) (client, error) {
	for range 2 {
		old, err := s.store.cachedClient(ctx, c.ID)
		switch {
		case errors.Is(err, errNotFound):
			err = s.store.createClient(ctx, c)
			if errors.Is(err, errExists) { // created meanwhile by a concurrent request
				continue
			}
			if err == nil {
				s.log.Info("client added from its metadata document", "client_id", c.ID)
			}
			return c, err
		case err != nil:
			return c, err
		case sameDocument(old, c):
			return old, nil
		}
		c.CreatedAt, c.OwnerID, c.Description = old.CreatedAt, old.OwnerID, old.Description
		if err := s.store.updateClient(ctx, c); err != nil {
			return c, err
		}
		return c, nil
	}
	return c, errors.New("a metadata document's client was created and removed concurrently")
}

// sameDocument reports whether the stored client says what the document says.
func sameDocument(a, b client) bool {
	return a.Name == b.Name && slices.Equal(a.RedirectURIs, b.RedirectURIs) && slices.Equal(a.GrantTypes, b.GrantTypes) &&
		slices.Equal(a.PostLogoutURIs, b.PostLogoutURIs) && a.LogoURI == b.LogoURI && a.ClientURI == b.ClientURI &&
		a.Public == b.Public && a.Dynamic == b.Dynamic && slices.Equal(a.Scopes, b.Scopes) && a.SecretHash == nil
}

// cached returns the client of a document fetched before and still fresh.
func (m *cimd) cached(id string, now time.Time) (client, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[id]
	if !ok || !now.Before(d.expires) {
		return client{}, false
	}
	return d.client, true
}

// put caches a document's client until expires; a full cache first drops what has expired,
// then the entry closest to expiry.
func (m *cimd) put(id string, c client, now, expires time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.docs[id]; !ok && len(m.docs) >= m.max {
		for k, d := range m.docs {
			if !now.Before(d.expires) {
				delete(m.docs, k)
			}
		}
		if len(m.docs) >= m.max {
			var soonest string
			var at time.Time
			for k, d := range m.docs {
				if soonest == "" || d.expires.Before(at) {
					soonest, at = k, d.expires
				}
			}
			delete(m.docs, soonest)
		}
	}
	m.docs[id] = cachedDoc{client: c, expires: expires}
}

// metadataDocument is the part of a client metadata document (RFC 7591 §2 names) oauthd uses.
type metadataDocument struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientURI               string   `json:"client_uri"`
	LogoURI                 string   `json:"logo_uri"`
	PostLogoutRedirectURIs  []string `json:"post_logout_redirect_uris"`
	ClientSecret            *string  `json:"client_secret"`
}

// fetch gets and validates the document at id and returns its client and how long it may
// be cached.
func (m *cimd) fetch(ctx context.Context, id string) (client, time.Duration, error) {
	// The bound on the whole fetch is also a context, checked after the body is read: a body
	// cut short by the deadline can end in a clean EOF (the peer's handler ends when the
	// connection goes), and must not pass for a short document.
	ctx, cancel := context.WithTimeout(ctx, m.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return client{}, 0, docError(http.StatusBadRequest, id, "the URL cannot be fetched")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "oauthd (client ID metadata document fetcher)")
	resp, err := m.client.Do(req)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errNonPublicAddress):
			return client{}, 0, docError(http.StatusBadRequest, id, "its host resolves to a loopback, private or link-local address, which this server does not fetch from")
		case errors.As(err, &ne) && ne.Timeout():
			return client{}, 0, docError(http.StatusBadGateway, id, "its server did not answer within %v", m.client.Timeout)
		}
		return client{}, 0, docError(http.StatusBadGateway, id, "it could not be fetched (%s)", fetchProblem(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return client{}, 0, docError(http.StatusBadGateway, id, "its server answered with a redirect (HTTP %d); the document must be served at its client_id URL itself", resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return client{}, 0, docError(http.StatusBadGateway, id, "its server answered HTTP %d", resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return client{}, 0, docError(http.StatusBadGateway, id, "it is not JSON (Content-Type %q)", resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, metadataMaxBytes+1))
	if err != nil || ctx.Err() != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil {
			return client{}, 0, docError(http.StatusBadGateway, id, "its server did not send the whole document within %v", m.client.Timeout)
		}
		return client{}, 0, docError(http.StatusBadGateway, id, "reading it failed")
	}
	if len(body) > metadataMaxBytes {
		return client{}, 0, docError(http.StatusBadGateway, id, "it is larger than %d KiB", metadataMaxBytes>>10)
	}
	var doc metadataDocument
	if err := json.Unmarshal(body, &doc); err != nil {
		return client{}, 0, docError(http.StatusBadGateway, id, "it is not a JSON object of client metadata (%s)", jsonProblem(err))
	}
	c, err := doc.client(id)
	if err != nil {
		return client{}, 0, err
	}
	return c, cacheLifetime(resp.Header.Get("Cache-Control")), nil
}

// fetchProblem says briefly why a fetch failed, without echoing response data.
func fetchProblem(err error) string {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return "its host name does not resolve"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return "its server refused the connection"
	case strings.Contains(err.Error(), "certificate"):
		return "its TLS certificate does not verify"
	}
	return "connection failed"
}

// client validates a document fetched from id into the public client it describes.
func (d metadataDocument) client(id string) (client, error) {
	if d.ClientID != id {
		return client{}, docError(http.StatusBadRequest, id, "its client_id (%q) is not the URL it was fetched from", d.ClientID)
	}
	switch d.TokenEndpointAuthMethod {
	case "", "none":
	default:
		return client{}, docError(http.StatusBadRequest, id, "it asks for token_endpoint_auth_method %q; only public clients (none, with PKCE) may identify themselves with a metadata document here", d.TokenEndpointAuthMethod)
	}
	if d.ClientSecret != nil {
		return client{}, docError(http.StatusBadRequest, id, "it contains a client_secret, which a public document must never carry")
	}
	if len(d.RedirectURIs) == 0 {
		return client{}, docError(http.StatusBadRequest, id, "it lists no redirect_uris")
	}
	for _, g := range d.GrantTypes {
		if g != grantAuthorizationCode && g != grantRefreshToken {
			return client{}, docError(http.StatusBadRequest, id, "it asks for the grant type %q; a metadata document client may use authorization_code and refresh_token", g)
		}
	}
	for _, rt := range d.ResponseTypes {
		if rt != "code" {
			return client{}, docError(http.StatusBadRequest, id, "it asks for the response type %q; only code is supported", rt)
		}
	}
	grants := d.GrantTypes
	if len(grants) == 0 {
		grants = []string{grantAuthorizationCode} // RFC 7591 §2's default
	}
	if !slices.Contains(grants, grantAuthorizationCode) {
		return client{}, docError(http.StatusBadRequest, id, "its grant_types leave out authorization_code, the only way such a client starts")
	}
	name := strings.TrimSpace(d.ClientName)
	if name == "" {
		name = "An app from " + metadataHost(id)
	}
	for len(name) > 200 { // at a character's boundary
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	c := client{ID: id}
	sp := clientSpec{Name: strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, name), RedirectURIs: d.RedirectURIs, PostLogoutURIs: d.PostLogoutRedirectURIs, GrantTypes: grants, Public: true, Dynamic: true,
		LogoURI: d.LogoURI, ClientURI: d.ClientURI}
	if err := sp.apply(&c); err != nil {
		return client{}, docError(http.StatusBadRequest, id, "%s", err.Error())
	}
	return c, nil
}

// cacheLifetime is how long a document may be used: its max-age within one minute and one
// day; a minute when it has none, or says no-cache or no-store.
func cacheLifetime(cc string) time.Duration {
	d := metadataMinCache
	for _, dir := range strings.Split(cc, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(dir), "=")
		switch strings.ToLower(k) {
		case "no-store", "no-cache":
			return metadataMinCache
		case "max-age":
			if n, err := strconv.ParseInt(strings.Trim(v, `"`), 10, 64); err == nil && n >= 0 {
				d = time.Duration(min(n, int64(metadataMaxCache/time.Second))) * time.Second
			}
		}
	}
	return min(max(d, metadataMinCache), metadataMaxCache)
}
