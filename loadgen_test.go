package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A load generator in another process, for the latency benchmarks (tail_bench_test.go).
//
// The test binary re-executes itself (as crash_test.go runs oauthd) with OAUTHD_TEST_LOADGEN
// holding a loadSpec: the child opens its connections, makes one request on each, prints
// "ready", waits for a line on its stdin, runs the load and prints a loadResult. The server's
// process then holds the server alone: its CPU, its garbage and its scheduler are not shared
// with the clients' (they still share the machine's cores).

// loadSpec is what the child is asked to do.
type loadSpec struct {
	Mode    string        // "post" (a fixed form), "get", "refresh" (rotate chains), "code" (authorize + exchange)
	URL     string        // the endpoint (for "code", the token endpoint)
	Auth    string        // the Authorization header of every POST
	Form    string        // the body of every "post"
	Conns   int           // concurrent clients, each on its own connection
	N       int           // requests in total; 0: run for Seconds
	Seconds float64       // with N == 0, how long the load runs
	Chains  []string      // "refresh": one starting refresh token per client
	Code    *codeLoadSpec // "code"
}

// codeLoadSpec is a code flow's fixed part: a signed-in browser's session with remembered
// consent, and the client.
type codeLoadSpec struct {
	AuthorizeURL string // the authorization endpoint
	Cookie       string // "name=value" of the session cookie
	Client       testClient
}

// loadResult is what the child measured. Latencies are in microseconds.
type loadResult struct {
	N          int     // requests answered as expected
	Errors     int     // requests that failed or got an unexpected answer
	FirstError string  // the first such failure
	Start      int64   // when the load started (unix ns)
	Seconds    float64 // from the start signal to the last answer
	P50, P90   int64
	P99, P999  int64
	Max        int64
	Slowest    []slowRequest // the ten slowest, for matching against the server's timeline
	Stalls     []slowRequest // every request that took 40 ms or more (up to 1,000)
}

// slowRequest is one slow request: when it started (µs after the start) and how long it took.
type slowRequest struct{ At, Took int64 }

// loadEnv names the variable that makes the test binary a load generator.
const loadEnv = "OAUTHD_TEST_LOADGEN"

// loadProc is a running load generator.
type loadProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	errs  *strings.Builder
}

// startLoad starts a load generator and waits until its clients are connected.
func startLoad(spec loadSpec) (*loadProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	js, _ := json.Marshal(spec)
	cmd := exec.Command(exe, "-test.run", "^$")
	cmd.Env = append(os.Environ(), loadEnv+"="+string(js))
	p := &loadProc{cmd: cmd, errs: &strings.Builder{}}
	cmd.Stderr = p.errs
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.out = bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := p.out.ReadString('\n')
	if err != nil || line != "ready\n" {
		p.kill()
		return nil, fmt.Errorf("load generator: %q %v %s", line, err, p.errs.String())
	}
	return p, nil
}

// run lets the load go and waits for its result.
func (p *loadProc) run() (loadResult, error) {
	var res loadResult
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		p.kill()
		return res, err
	}
	line, err := p.out.ReadString('\n')
	if err == nil {
		err = json.Unmarshal([]byte(line), &res)
	}
	if werr := p.cmd.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return res, fmt.Errorf("load generator: %v %s", err, p.errs.String())
	}
	return res, nil
}

func (p *loadProc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// loadgenMain is the child's whole life: it returns the process's exit code.
func loadgenMain(specJSON string) int {
	var spec loadSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil || spec.Conns < 1 {
		fmt.Fprintln(os.Stderr, "bad load spec:", err)
		return 2
	}
	if spec.Mode == "refresh" && len(spec.Chains) < spec.Conns {
		fmt.Fprintln(os.Stderr, "refresh needs one chain per client")
		return 2
	}
	clients := make([]*loadClient, spec.Conns)
	for i := range clients {
		c, err := newLoadClient(&spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		clients[i] = c
		if spec.Mode == "refresh" {
			clients[i].rt = spec.Chains[i]
		}
	}
	// One request per client, all at once, so that every client has its connection open.
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.one(); err != nil {
				c.err = err
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if c.err != nil {
			fmt.Fprintln(os.Stderr, "warm-up:", c.err)
			return 1
		}
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	var left atomic.Int64
	left.Store(int64(spec.N))
	start := time.Now()
	stop := start.Add(time.Duration(spec.Seconds * float64(time.Second)))
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if spec.N > 0 {
					if left.Add(-1) < 0 {
						return
					}
				} else if !time.Now().Before(stop) {
					return
				}
				t0 := time.Now()
				err := c.one()
				took := time.Since(t0)
				if err != nil {
					c.errors++
					if c.err == nil {
						c.err = err
					}
					if spec.Mode == "refresh" {
						return // the chain is broken
					}
					continue
				}
				c.lat = append(c.lat, latency{at: t0.Sub(start), took: took})
			}
		}()
	}
	wg.Wait()
	res := loadResult{Start: start.UnixNano(), Seconds: time.Since(start).Seconds()}
	var all []latency
	for _, c := range clients {
		all = append(all, c.lat...)
		res.Errors += c.errors
		if c.err != nil && res.FirstError == "" {
			res.FirstError = c.err.Error()
		}
	}
	res.N = len(all)
	summarize(&res, all)
	js, _ := json.Marshal(res)
	fmt.Println(string(js))
	return 0
}

// latency is one answered request: when it started, after the start signal, and how long it took.
type latency struct{ at, took time.Duration }

// summarize fills in res's percentiles and slowest requests.
func summarize(res *loadResult, all []latency) {
	if len(all) == 0 {
		return
	}
	slices.SortFunc(all, func(a, b latency) int { return int(a.took - b.took) })
	pct := func(p float64) int64 {
		i := int(p * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return all[i].took.Microseconds()
	}
	res.P50, res.P90, res.P99, res.P999 = pct(0.50), pct(0.90), pct(0.99), pct(0.999)
	res.Max = all[len(all)-1].took.Microseconds()
	for i := len(all) - 1; i >= 0 && i >= len(all)-10; i-- {
		res.Slowest = append(res.Slowest, slowRequest{At: all[i].at.Microseconds(), Took: all[i].took.Microseconds()})
	}
	for i := len(all) - 1; i >= 0 && all[i].took >= 40*time.Millisecond && len(res.Stalls) < 1000; i-- {
		res.Stalls = append(res.Stalls, slowRequest{At: all[i].at.Microseconds(), Took: all[i].took.Microseconds()})
	}
}

// loadClient is one of the child's concurrent clients: one keep-alive connection, written
// to and read from by hand as wrk does, so that the clients' own CPU is small next to the
// server's (net/http's client cost about as much as the server per request, and the two
// share the machine's cores).
type loadClient struct {
	spec   *loadSpec
	host   string // host:port of every URL
	conn   net.Conn
	r      *bufio.Reader
	fixed  []byte // "get" and "post": the one request, built once
	rt     string // "refresh": the chain's current refresh token
	lat    []latency
	errors int
	err    error
}

// newLoadClient prepares a client for spec; it connects on its first request.
func newLoadClient(spec *loadSpec) (*loadClient, error) {
	u, err := url.Parse(spec.URL)
	if err != nil {
		return nil, err
	}
	c := &loadClient{spec: spec, host: u.Host}
	switch spec.Mode {
	case "get":
		c.fixed = c.request("GET", u.RequestURI(), "", "")
	case "post":
		c.fixed = c.request("POST", u.RequestURI(), spec.Auth, spec.Form)
	}
	return c, nil
}

// request builds one HTTP/1.1 request.
func (c *loadClient) request(method, uri, auth, body string) []byte {
	b := make([]byte, 0, 256+len(uri)+len(auth)+len(body))
	b = append(b, method+" "+uri+" HTTP/1.1\r\nHost: "+c.host+"\r\n"...)
	if auth != "" {
		b = append(b, "Authorization: "+auth+"\r\n"...)
	}
	if method == "POST" {
		b = append(b, "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// one makes one request (a code flow: two) and checks its answer.
func (c *loadClient) one() error {
	s := c.spec
	switch s.Mode {
	case "get", "post":
		_, _, err := c.do(c.fixed, 200)
		return err
	case "refresh":
		_, body, err := c.do(c.request("POST", c.path(s.URL), s.Auth, "grant_type=refresh_token&refresh_token="+url.QueryEscape(c.rt)), 200)
		if err != nil {
			return err
		}
		next := between(body, `"refresh_token":"`, `"`)
		if next == "" {
			return fmt.Errorf("refresh: %s", body)
		}
		c.rt = next
		return nil
	case "code":
		var verifier string
		q := codeRequest(s.Code.Client, &verifier)
		req := c.request("GET", c.path(s.Code.AuthorizeURL)+"?"+q.Encode(), "", "")
		req = append(req[:len(req)-2], "Cookie: "+s.Code.Cookie+"\r\n\r\n"...)
		loc, _, err := c.do(req, 302)
		if err != nil {
			return err
		}
		lu, _ := url.Parse(loc)
		code := lu.Query().Get("code")
		if code == "" {
			return fmt.Errorf("authorize: redirected to %s", loc)
		}
		_, _, err = c.do(c.request("POST", c.path(s.URL), s.Auth, url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {s.Code.Client.RedirectURIs[0]}, "code_verifier": {verifier}}.Encode()), 200)
		return err
	}
	return fmt.Errorf("unknown load mode %q", s.Mode)
}

// path is the request URI of an absolute URL.
func (c *loadClient) path(u string) string {
	pu, _ := url.Parse(u)
	return pu.RequestURI()
}

// do sends req on the client's connection (opening it when needed) and reads the answer,
// which must have status want; it returns the Location header and the body.
func (c *loadClient) do(req []byte, want int) (location, body string, err error) {
	if c.conn == nil {
		if c.conn, err = net.Dial("tcp", c.host); err != nil {
			return "", "", err
		}
		c.r = bufio.NewReaderSize(c.conn, 16<<10)
	}
	defer func() {
		if err != nil && c.conn != nil {
			c.conn.Close()
			c.conn = nil
		}
	}()
	if _, err = c.conn.Write(req); err != nil {
		return "", "", err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return "", "", err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 {
		return "", "", fmt.Errorf("bad status line %q", line)
	}
	status, _ := strconv.Atoi(string(line[9:12]))
	length := -1
	closeAfter := false
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return "", "", err
		}
		if len(h) <= 2 {
			break
		}
		k, v, _ := strings.Cut(strings.TrimRight(string(h), "\r\n"), ":")
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "content-length":
			length, _ = strconv.Atoi(v)
		case "location":
			location = v
		case "connection":
			closeAfter = strings.EqualFold(v, "close")
		case "transfer-encoding":
			return "", "", fmt.Errorf("transfer-encoding %s: not supported by the load generator", v)
		}
	}
	if length < 0 {
		return "", "", errors.New("an answer without Content-Length")
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "", "", err
	}
	if closeAfter {
		c.conn.Close()
		c.conn = nil
	}
	if status != want {
		return "", "", fmt.Errorf("%d %s", status, b)
	}
	return location, string(b), nil
}
