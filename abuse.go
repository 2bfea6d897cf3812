package main

import (
	"crypto/sha256"
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

// fail records a failure of key and returns the wait it now has.
func (b *backoff) fail(key string, now time.Time) time.Duration {
	key = shortKey(key)
	b.mu.Lock()
	defer b.mu.Unlock()
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
	if over := s.n - b.free; over > 0 {
		d := b.max
		if over <= 30 && b.base<<(over-1) < b.max {
			d = b.base << (over - 1)
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

// prune drops forgotten keys; if the table is still full, the ones not waiting. Called with mu.
func (b *backoff) prune(now time.Time) {
	defer func() { b.keys.Store(int64(len(b.m))) }()
	for k, s := range b.m {
		if now.Sub(s.last) >= b.forget {
			delete(b.m, k)
		}
	}
	for k, s := range b.m {
		if len(b.m) < maxBackoffKeys {
			return
		}
		if !s.until.After(now) {
			delete(b.m, k)
		}
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

// linkAllowed refuses (429, after answering) a source address that tried too many wrong
// setup, invitation or reset tokens.
func (s *server) linkAllowed(w http.ResponseWriter, r *http.Request) bool {
	if d := s.guard.links.wait(s.sourceAddr(r), s.now()); d > 0 {
		w.Header().Set("Retry-After", retryAfter(d))
		s.errorPage(w, http.StatusTooManyRequests, "Too many attempts", "Too many wrong links were tried from your network. Try again in "+waitText(d)+".")
		return false
	}
	return true
}

// linkFailed records a wrong setup, invitation or reset token.
func (s *server) linkFailed(r *http.Request) {
	from := s.sourceAddr(r)
	s.guard.links.fail(from, s.now())
	s.log.Info("wrong one-time link", "path", r.URL.Path, "from", from)
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
