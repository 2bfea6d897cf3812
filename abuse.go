package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Brute-force defences: exponential backoff per account, per source address and per
// client_id; a bound on concurrent password hashing; the source address itself, taken from
// X-Forwarded-For only behind a proxy named with -trusted-proxy.

// backoff counts failures per key. The first free failures cost nothing; each one after
// that doubles the wait, from base up to max. A key forgets its failures after forget
// without one. Success resets a key.
type backoff struct {
	keys   atomic.Int64 // len(m): with no failures anywhere, wait and reset take no lock
	mu     sync.Mutex
	free   int
	base   time.Duration
	max    time.Duration
	forget time.Duration
	m      map[string]*strikes
}

type strikes struct {
	n     int
	last  time.Time // the last failure
	until time.Time // no attempt before this
	// undoUntil is until before the latest try: an undo restores it.
	undoUntil time.Time
}

// maxBackoffKeys bounds the memory an attacker can make the table use (about 100 bytes a key).
const maxBackoffKeys = 100_000

func newBackoff(free int, base, max, forget time.Duration) *backoff {
	return &backoff{free: free, base: base, max: max, forget: forget, m: map[string]*strikes{}}
}

// shortKey bounds what one key may cost: an attacker chooses usernames and client_ids.
func shortKey(key string) string {
	if len(key) <= 128 {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// wait is how long key must still wait before its next attempt (0: go ahead).
func (b *backoff) wait(key string, now time.Time) time.Duration {
	if b.keys.Load() == 0 {
		return 0
	}
	key = shortKey(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.m[key]
	if s == nil {
		return 0
	}
	if now.Sub(s.last) >= b.forget {
		b.drop(key)
		return 0
	}
	if d := s.until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// try counts an attempt of key before its check runs, so that concurrent attempts cannot
// all pass one wait check: while key must wait it refuses (returns the wait, counting
// nothing); else it records the attempt as a failure at once and returns 0. An attempt that
// then succeeds is taken back with undo, or the key forgotten with reset. N attempts at once
// cost what N in a row cost: at most free of them get through before the first wait.
func (b *backoff) try(key string, now time.Time) time.Duration {
	key = shortKey(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	var prev time.Time
	if s := b.m[key]; s != nil && now.Sub(s.last) < b.forget {
		if d := s.until.Sub(now); d > 0 {
			return d
		}
		prev = s.until
	}
	b.record(key, now)
	b.m[key].undoUntil = prev
	return 0
}

// undo takes back one attempt that try counted and that succeeded, with the wait it started
// (the latest try's; another attempt's failure meanwhile keeps its own count).
func (b *backoff) undo(key string) {
	key = shortKey(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.m[key]; s != nil && s.n > 0 {
		s.n--
		s.until = s.undoUntil // the wait this attempt started goes with it
		if s.n == 0 {
			b.drop(key)
		}
	}
}

// fail records a failure of key (one whose check ran without try) and returns the wait it
// now has.
func (b *backoff) fail(key string, now time.Time) time.Duration {
	key = shortKey(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.record(key, now)
}

// record counts a failure of key and returns its wait: the free-th failure starts the
// backoff at base, and each one after it doubles the wait up to max. Called with mu.
func (b *backoff) record(key string, now time.Time) time.Duration {
	s := b.m[key]
	if s == nil || now.Sub(s.last) >= b.forget {
		if len(b.m) >= maxBackoffKeys {
			b.prune(now)
		}
		s = &strikes{}
		b.m[key] = s
		b.keys.Store(int64(len(b.m)))
	}
	s.n++
	s.last = now
	if over := s.n - b.free; over >= 0 {
		d := b.max
		if over < 30 && b.base<<over < b.max {
			d = b.base << over
		}
		s.until = now.Add(d)
	}
	return max(s.until.Sub(now), 0)
}

// reset forgets key's failures.
func (b *backoff) reset(key string) {
	if b.keys.Load() == 0 {
		return
	}
	key = shortKey(key)
	b.mu.Lock()
	b.drop(key)
	b.mu.Unlock()
}

// drop deletes key. Called with mu.
func (b *backoff) drop(key string) {
	delete(b.m, key)
	b.keys.Store(int64(len(b.m)))
}

// prune makes room: it drops forgotten keys, then keys not waiting, then, if every key
// is waiting (a flood of names), any keys, down to nine tenths of the bound so that it runs
// rarely. Called with mu.
func (b *backoff) prune(now time.Time) {
	defer func() { b.keys.Store(int64(len(b.m))) }()
	low := maxBackoffKeys * 9 / 10
	for k, s := range b.m {
		if now.Sub(s.last) >= b.forget {
			delete(b.m, k)
		}
	}
	for k, s := range b.m {
		if len(b.m) < low {
			return
		}
		if !s.until.After(now) {
			delete(b.m, k)
		}
	}
	for k := range b.m {
		if len(b.m) < low {
			return
		}
		delete(b.m, k)
	}
}

// retryAfter is a wait as Retry-After seconds (at least 1).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(int((d+time.Second-1)/time.Second), 1))
}

// waitText says a wait in words for a page.
func waitText(d time.Duration) string {
	switch s := int((d + time.Second - 1) / time.Second); {
	case s <= 1:
		return "a second"
	case s < 120:
		return fmt.Sprintf("%d seconds", s)
	default:
		return fmt.Sprintf("%d minutes", (s+59)/60)
	}
}

// guards are the server's brute-force defences.
type guards struct {
	users    *backoff      // failed sign-ins per account (lower-cased name)
	addrs    *backoff      // failed sign-ins per source address
	clients  *backoff      // failed client authentications, per client_id
	links    *backoff      // wrong setup, invitation and reset tokens, per source address
	hashing  chan struct{} // a slot per password hash that may run at once
	hashWait time.Duration // how long a request waits for a slot before it is told to come back
	proxies  []netip.Prefix
}

// newGuards sets the limits: an account gets 5 free failures, an address 20 (several people
// may share it), a client_id 10; then waits double from 1 s to 15 minutes (1 minute for
// clients, whose secrets cannot be guessed anyway), and are forgotten after an hour.
func newGuards(proxies []netip.Prefix) guards {
	return guards{
		users:    newBackoff(5, time.Second, 15*time.Minute, time.Hour),
		addrs:    newBackoff(20, time.Second, 15*time.Minute, time.Hour),
		clients:  newBackoff(10, time.Second, time.Minute, time.Hour),
		links:    newBackoff(10, time.Second, 15*time.Minute, time.Hour),
		hashing:  make(chan struct{}, max(2, runtime.NumCPU())),
		hashWait: 2 * time.Second,
		proxies:  proxies,
	}
}

// try counts a sign-in attempt — a password or a second factor — for ukey (the account, or
// its device cookie) from the address key fromKey before it is checked, in both backoffs;
// while either must wait it returns that wait and counts nothing. An attempt that is not
// checked after all, or that succeeds, is taken back with undo.
func (g guards) try(ukey, fromKey string, now time.Time) time.Duration {
	d := g.addrs.try(fromKey, now)
	if d == 0 {
		if d = g.users.try(ukey, now); d > 0 {
			g.addrs.undo(fromKey)
		}
	}
	return d
}

// undo takes back an attempt that try counted.
func (g guards) undo(ukey, fromKey string) {
	g.users.undo(ukey)
	g.addrs.undo(fromKey)
}

// hashing runs fn, a password hash, in one of the hashing slots; false (after answering
// 429) when none frees up in time. Each PBKDF2 costs ~0.15 s of a core: a flood of sign-ins
// must not take every core.
func (s *server) hashing(w http.ResponseWriter, fn func()) bool {
	t := time.NewTimer(s.guard.hashWait)
	defer t.Stop()
	select {
	case s.guard.hashing <- struct{}{}:
		defer func() { <-s.guard.hashing }()
		fn()
		return true
	case <-t.C:
		w.Header().Set("Retry-After", "1")
		s.errorPage(w, http.StatusTooManyRequests, "Busy", "The server is checking many passwords at the moment. Try again in a second.")
		return false
	}
}

// linkAllowed counts an attempt at a setup, invitation or reset token from the request's
// source address before the token is checked, and refuses (429, after answering) an address
// that tried too many wrong ones. The caller reports the outcome with linkChecked.
func (s *server) linkAllowed(w http.ResponseWriter, r *http.Request) bool {
	if d := s.guard.links.try(s.sourceKey(r), s.now()); d > 0 {
		w.Header().Set("Retry-After", retryAfter(d))
		s.errorPage(w, http.StatusTooManyRequests, "Too many attempts", "Too many wrong links were tried from your network. Try again in "+waitText(d)+".")
		return false
	}
	return true
}

// linkChecked reports the outcome of the attempt linkAllowed counted: a good token takes
// the attempt back, a wrong one is logged (it stays counted).
func (s *server) linkChecked(r *http.Request, good bool) {
	if good {
		s.guard.links.undo(s.sourceKey(r))
		return
	}
	s.log.Info("wrong one-time link", "path", r.URL.Path, "from", s.sourceAddr(r))
}

// deviceCookieTTL is how long a browser that signed in as an account stays known to it.
const deviceCookieTTL = 180 * 24 * time.Hour

// deviceCookieName is the device cookie of one account: a browser may know several.
func (s *server) deviceCookieName(account string) string {
	sum := sha256.Sum256([]byte("device\x00" + account))
	return "oauthd_device_" + hex.EncodeToString(sum[:6])
}

// deviceMAC signs a device cookie's account, nonce and expiry with a key derived from the
// server's CSRF key.
func (s *server) deviceMAC(account, nonce, expires string) []byte {
	k := hmac.New(sha256.New, s.csrfKey)
	k.Write([]byte("device cookie key"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(account + "\x00" + nonce + "\x00" + expires))
	return m.Sum(nil)
}

// setDeviceCookie gives a browser that just signed in as account its device cookie
// (OWASP "Slow Down Online Guessing Attacks with Device Cookies"): nonce.expiry.signature.
func (s *server) setDeviceCookie(w http.ResponseWriter, account string, now time.Time) {
	nonce := newSecret()[:22]
	exp := strconv.FormatInt(now.Add(deviceCookieTTL).Unix(), 10)
	v := nonce + "." + exp + "." + base64.RawURLEncoding.EncodeToString(s.deviceMAC(account, nonce, exp))
	s.setCookie(w, s.deviceCookieName(account), v, int(deviceCookieTTL/time.Second))
}

// deviceCookie returns the nonce of the request's valid, unexpired device cookie for
// account ("" when it has none): its failures are then counted per cookie, not per account.
func (s *server) deviceCookie(r *http.Request, account string) string {
	ck, err := r.Cookie(s.cookieName(s.deviceCookieName(account)))
	if err != nil {
		return ""
	}
	nonce, rest, _ := strings.Cut(ck.Value, ".")
	exp, sig, _ := strings.Cut(rest, ".")
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	t, terr := strconv.ParseInt(exp, 10, 64)
	if err != nil || terr != nil || nonce == "" || !hmac.Equal(mac, s.deviceMAC(account, nonce, exp)) || s.now().Unix() >= t {
		return ""
	}
	return nonce
}

// sourceAddr is the address a request comes from: the connection's peer, or, when that
// peer is a trusted proxy, the last address in X-Forwarded-For that is not one.
func (s *server) sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(peer) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for h := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			return host // a malformed chain: trust only what we saw
		}
		if !s.trusted(a) {
			return a.Unmap().String()
		}
	}
	return host
}

// sourceKey is what per-address limits count on: the source address, or for IPv6 its /64
// (one subscriber's network; a host there can use any of its 2^64 addresses).
func (s *server) sourceKey(r *http.Request) string {
	return addrKey(s.sourceAddr(r))
}

// addrKey groups an address for a limit: IPv4 as it is, IPv6 by its /64 prefix.
func addrKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Unmap().Is4() {
		return addr
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

func (s *server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.guard.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseProxies reads -trusted-proxy: comma-separated CIDRs or addresses.
func parseProxies(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an address", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
