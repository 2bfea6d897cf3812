package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Benchmarks run over real loopback HTTP against an httptest.Server with the real handler on
// a real SQLite file. Each reports req/s and, once BenchmarkBaseline has run in the same
// invocation, the fraction of the baseline ("x_baseline"):
//
//	go test -run '^$' -bench . -benchtime 3s

// benchParallelism × GOMAXPROCS concurrent clients drive every benchmark (64 on 2 cores):
// durable writes are group-committed, so their throughput grows with concurrency.
const benchParallelism = 32

// baselineRPS is the req/s of BenchmarkBaseline in this run.
var baselineRPS struct {
	sync.Mutex
	v float64
}

// benchClient is an HTTP client that keeps enough idle connections for RunParallel.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// benchServer is a test server whose handler also answers the baseline: a trivial 100-byte
// JSON through the same middleware.
func benchServer(b *testing.B, edit ...func(*config)) *testServer {
	b.Helper()
	ts := newTestServer(b, edit...)
	ts.s.now = time.Now // tokens must not expire during a long run
	// Log lines are formatted as in production (Info) and thrown away, not kept in memory.
	ts.s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	body := []byte(`{"ok":true,"padding":"` + strings.Repeat("x", 100-len(`{"ok":true,"padding":""}`)) + `"}`)
	mux := http.NewServeMux()
	mux.Handle("/", ts.s.routes())
	baseline := ts.s.headers(http.MaxBytesHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}), maxBody))
	mux.Handle("GET /bench/baseline", baseline)
	mux.Handle("POST /bench/baseline", baseline) // BenchmarkTail's baseline answers a POST
	ts.srv.Config.Handler = mux
	return ts
}

// cpuAtStart and ioAtStart are this process's CPU time and write counters when the timer
// of the running benchmark started: report prints the cores used and the bytes written per
// operation (the load generator included).
var (
	cpuAtStart time.Duration
	ioAtStart  [2]float64
)

// procIO reads the bytes this process had written with write calls and caused to be written
// to storage, from /proc/self/io.
func procIO() (v [2]float64) {
	b, _ := os.ReadFile("/proc/self/io")
	for _, line := range strings.Split(string(b), "\n") {
		k, val, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseFloat(val, 64)
		switch k {
		case "wchar":
			v[0] = n
		case "write_bytes":
			v[1] = n
		}
	}
	return v
}

// startTimer resets the benchmark timer and takes the CPU and I/O readings report uses.
// runParallel times body on benchParallelism goroutines per core, counting allocations.
func runParallel(b *testing.B, body func(*testing.PB)) {
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	startTimer(b)
	b.RunParallel(body)
}

func startTimer(b *testing.B) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpuAtStart = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	ioAtStart = procIO()
	b.ResetTimer()
}

// report records req/s, the fraction of the baseline and, for writes, the group commit's
// average batch size.
func report(b *testing.B, ts *testServer) {
	if w := ts.s.store.w; w != nil {
		if n := w.batches.Load(); n > 0 {
			b.ReportMetric(float64(w.jobsRun.Load())/float64(n), "jobs/commit")
		}
	}
	rps := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rps, "req/s")
	baselineRPS.Lock()
	base := baselineRPS.v
	baselineRPS.Unlock()
	if base > 0 {
		b.ReportMetric(rps/base, "x_baseline")
	}
	b.ReportMetric(rssMB("VmHWM"), "peak_rss_MB")
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - cpuAtStart
	b.ReportMetric(cpu.Seconds()/b.Elapsed().Seconds(), "cpu_cores")
	if fi, err := os.Stat(ts.s.store.path + "-wal"); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "wal_MB")
	}
	io := procIO()
	b.ReportMetric((io[0]-ioAtStart[0])/float64(b.N)/1024, "wchar_KB/op")
	b.ReportMetric((io[1]-ioAtStart[1])/float64(b.N)/1024, "disk_KB/op")
}

// rssMB reads a memory figure (VmRSS, VmHWM) of this process from /proc/self/status.
func rssMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// mustDo sends a request and drains the answer, failing the benchmark on an unexpected status.
func mustDo(b *testing.B, req *http.Request, want int) []byte {
	resp, err := benchClient.Do(req)
	if err != nil {
		b.Error(err)
		return nil
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Errorf("%s %s = %d %s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	return body
}

// poster builds a benchmark's POSTs to one endpoint as a client library would: the client's
// Basic credentials are encoded once, and a form that does not change is encoded once by the
// caller. (The baseline's client builds a bare GET; the load generator shares the server's
// cores, so its own waste counted against every figure divided by the baseline.)
type poster struct{ url, auth string }

func newPoster(url string, c testClient) poster {
	return poster{url, "Basic " + base64.StdEncoding.EncodeToString([]byte(c.ID+":"+c.Secret))}
}

// req is a POST of body, an encoded form.
func (p poster) req(body string) *http.Request {
	req, _ := http.NewRequest("POST", p.url, strings.NewReader(body))
	req.Header = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Authorization": {p.auth}}
	return req
}

func BenchmarkBaseline(b *testing.B) {
	ts := benchServer(b)
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", ts.url+"/bench/baseline", nil)
			mustDo(b, req, 200)
		}
	})
	rps := float64(b.N) / b.Elapsed().Seconds()
	baselineRPS.Lock()
	baselineRPS.v = rps
	baselineRPS.Unlock()
	report(b, ts)
}

// addBenchUser adds a user with a fresh name and the password "bench password".
func (ts *testServer) addBenchUser() string {
	name := "bench" + strings.ToLower(newSecret()[:8])
	ts.addUser(name, "bench password")
	return name
}

// benchTokens gives a live access token of c (through a real code flow).
func benchTokens(b *testing.B, ts *testServer, c testClient) tokenCall {
	code, ver := ts.browser(ts.addBenchUser(), "bench password").getCode(c)
	return ts.exchange(c, code, ver)
}

func BenchmarkIntrospect(b *testing.B) {
	ts := benchServer(b)
	c := ts.addClient(false, "read", "https://app.example/cb")
	tok := str(benchTokens(b, ts, c).JSON["access_token"])
	benchIntrospect(b, ts, c, tok)
}

func benchIntrospect(b *testing.B, ts *testServer, c testClient, tok string) {
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	p := newPoster(ts.url+"/oauth/introspect", c)
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			body := mustDo(b, p.req(form), 200)
			if !strings.Contains(string(body), `"active":true`) {
				b.Errorf("introspection: %s", body)
			}
		}
	})
	report(b, ts)
}

func BenchmarkClientCredentials(b *testing.B) {
	ts := benchServer(b)
	c := ts.addServiceClient("read")
	form := url.Values{"grant_type": {grantClientCredentials}}.Encode()
	p := newPoster(ts.url+"/oauth/token", c)
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			mustDo(b, p.req(form), 200)
		}
	})
	report(b, ts)
}

// BenchmarkClientCredentialsJWT issues RFC 9068 JWT access tokens (ES256) for a -jwt
// resource. Its target is a fraction of BenchmarkClientCredentials; since this machine's
// speed drifts between benchmarks, it also measures both side by side (eight alternating
// half-second rounds, JWT-opaque-opaque-JWT twice) and reports their ratio as x_opaque.
func BenchmarkClientCredentialsJWT(b *testing.B) {
	ts := benchServer(b)
	c := ts.addServiceClient("read")
	ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", true, 0)
	jwtForm := url.Values{"grant_type": {grantClientCredentials}, "resource": {"https://mcp.example.com/mcp"}}.Encode()
	p := newPoster(ts.url+"/oauth/token", c)
	if body := mustDo(b, p.req(jwtForm), 200); strings.Count(between(string(body), `"access_token":"`, `"`), ".") != 2 {
		b.Fatalf("not a JWT: %s", body)
	}
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			mustDo(b, p.req(jwtForm), 200)
		}
	})
	report(b, ts)
	b.StopTimer()
	if b.N < 2000 { // a probing round of the benchmark framework
		return
	}
	opaqueForm := url.Values{"grant_type": {grantClientCredentials}}.Encode()
	var jwt, opaque int64
	for i := range 4 {
		j := func() { jwt += postFor(b, p, jwtForm, 500*time.Millisecond) }
		o := func() { opaque += postFor(b, p, opaqueForm, 500*time.Millisecond) }
		if i%2 == 0 {
			j()
			o()
		} else {
			o()
			j()
		}
	}
	b.ReportMetric(float64(jwt)/float64(opaque), "x_opaque")
}

// postFor posts form with as many clients as the benchmarks use, for d, and returns how many
// answers came back.
func postFor(b *testing.B, p poster, form string, d time.Duration) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range benchParallelism * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				mustDo(b, p.req(form), 200)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load()
}

// BenchmarkIntrospectResource introspects a token issued for a resource, asked by that
// resource's own credential (the per-caller audience check of RFC 7662 §4).
func BenchmarkIntrospectResource(b *testing.B) {
	ts := benchServer(b)
	c := ts.addClient(false, "read", "https://app.example/cb")
	res := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", false, 0)
	br := ts.browser(ts.addBenchUser(), "bench password")
	tok := str(br.codeWith(c, []string{res.URI}, "", nil).JSON["access_token"])
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	p := newPoster(ts.url+"/oauth/introspect", res.cred())
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			body := mustDo(b, p.req(form), 200)
			if !strings.Contains(string(body), `"aud":"https://mcp.example.com/mcp"`) {
				b.Errorf("introspection: %s", body)
			}
		}
	})
	report(b, ts)
}

func BenchmarkRefresh(b *testing.B) {
	ts := benchServer(b)
	c := ts.addClient(false, "read", "https://app.example/cb")
	// One refresh chain per goroutine: each rotation hands the next refresh token on. The
	// chains start from code flows of one signed-in user, made before the timer starts.
	chains := make(chan string, benchParallelism*runtime.GOMAXPROCS(0))
	br := ts.browser(ts.addBenchUser(), "bench password")
	for range cap(chains) {
		code, ver := br.getCode(c)
		chains <- str(ts.exchange(c, code, ver).JSON["refresh_token"])
	}
	p := newPoster(ts.url+"/oauth/token", c)
	runParallel(b, func(pb *testing.PB) {
		rt := <-chains
		for pb.Next() {
			body := mustDo(b, p.req("grant_type=refresh_token&refresh_token="+url.QueryEscape(rt)), 200)
			next := between(string(body), `"refresh_token":"`, `"`)
			if next == "" {
				b.Errorf("refresh: %s", body)
				return
			}
			rt = next
		}
	})
	report(b, ts)
}

// between returns the text between two markers.
func between(s, from, to string) string {
	_, rest, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, to)
	return v
}

func BenchmarkCodeFlow(b *testing.B) {
	ts := benchServer(b)
	c := ts.addClient(false, "read", "https://app.example/cb")
	ts.addUser("alice", "correct horse battery")
	warm := ts.browser("alice", "correct horse battery")
	warm.getCode(c) // login and remembered consent
	var cookie *http.Cookie
	u, _ := url.Parse(ts.url)
	for _, ck := range warm.c.Jar.Cookies(u) {
		if ck.Name == "oauthd_session" {
			cookie = ck
		}
	}
	p := newPoster(ts.url+"/oauth/token", c)
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			var verifier string
			q := codeRequest(c, &verifier)
			req, _ := http.NewRequest("GET", ts.url+"/oauth/authorize?"+q.Encode(), nil)
			req.AddCookie(cookie)
			resp, err := benchClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			code := loc.Query().Get("code")
			if code == "" {
				b.Errorf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
				return
			}
			mustDo(b, p.req(url.Values{"grant_type": {"authorization_code"}, "code": {code},
				"redirect_uri": {c.RedirectURIs[0]}, "code_verifier": {verifier}}.Encode()), 200)
		}
	})
	report(b, ts)
}

// largeDB is a database with 1,000,000 live access tokens, built once per `go test` run.
var largeDB struct {
	once sync.Once
	path string
	err  error
}

// largeFixture builds the million-token database in one transaction, in a directory that
// TestMain removes at the end of the run.
func largeFixture(b *testing.B) string {
	largeDB.once.Do(func() {
		dir, err := os.MkdirTemp("", "oauthd-bench-")
		if err != nil {
			largeDB.err = err
			return
		}
		benchDirs = append(benchDirs, dir)
		largeDB.path = filepath.Join(dir, "large.db")
		st, err := openStore(context.Background(), largeDB.path)
		if err != nil {
			largeDB.err = err
			return
		}
		defer st.Close()
		start := time.Now()
		largeDB.err = st.tx(context.Background(), func(tx *sql.Tx) error {
			if _, err := tx.Exec(`INSERT INTO users(sub, username, password_hash, created_at) VALUES('bulk-sub', 'bulk', 'x', 0)`); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO clients(id, name, redirect_uris, public, created_at) VALUES('bulk-client', 'Bulk', '["https://b.example/cb"]', 0, 0)`); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO grants(id, client_id, user_id, scope, auth_time, created_at) VALUES(1, 'bulk-client', 1, 'read', 0, 0)`); err != nil {
				return err
			}
			ins, err := tx.Prepare("INSERT INTO tokens(hash, kind, grant_id, scope, created_at, expires_at) VALUES(?, 1, 1, 'read', 0, ?)")
			if err != nil {
				return err
			}
			defer ins.Close()
			far := time.Now().Add(240 * time.Hour).Unix()
			for i := range 1_000_000 {
				if _, err := ins.Exec(hashSecret(fmt.Sprint("bulk-token-", i)), far); err != nil {
					return err
				}
			}
			return nil
		})
		fmt.Fprintf(os.Stderr, "built the 1,000,000-token fixture in %v\n", time.Since(start).Round(time.Millisecond))
	})
	if largeDB.err != nil {
		b.Fatal(largeDB.err)
	}
	return largeDB.path
}

// benchDirs are removed by TestMain after the run.
var benchDirs []string

func TestMain(m *testing.M) {
	if os.Getenv("OAUTHD_TEST_AS_MAIN") == "1" { // the test binary playing the oauthd command (another process)
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	if spec := os.Getenv(loadEnv); spec != "" { // the test binary as a load generator (loadgen_test.go)
		os.Exit(loadgenMain(spec))
	}
	if db := os.Getenv(ckptChildEnv); db != "" { // a writer to kill mid-checkpoint (checkpoint_test.go)
		os.Exit(ckptChildMain(db))
	}
	code := m.Run()
	for _, d := range benchDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func BenchmarkIntrospectLargeDB(b *testing.B) {
	src := largeFixture(b)
	ts := benchServer(b, func(c *config) {
		// Each run gets its own copy so that nothing it writes touches the fixture.
		dst := filepath.Join(b.TempDir(), "large.db")
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, data, 0o600)
		}
		if err != nil {
			b.Fatal(err)
		}
		c.DB = dst
	})
	c := ts.addClient(false, "read", "https://app.example/cb")
	tok := str(benchTokens(b, ts, c).JSON["access_token"])
	var n int
	ts.s.store.db.QueryRow("SELECT count(*) FROM tokens").Scan(&n)
	if n < 1_000_000 {
		b.Fatalf("the large database has %d tokens", n)
	}
	benchIntrospect(b, ts, c, tok)
	if b.N < 2000 { // a probing round of the benchmark framework
		return
	}
	// The target compares this figure with BenchmarkIntrospect's, measured a minute earlier
	// (before a fixture build) on a machine whose speed drifts by more than 10% in that time.
	// So also measure both side by side: half a second each, eight times, in the order
	// large-small-small-large (twice) so that a drift within the measurement cancels out.
	small := benchServer(b)
	sc := small.addClient(false, "read", "https://app.example/cb")
	stok := str(benchTokens(b, small, sc).JSON["access_token"])
	var large, smallN int64
	for i := range 4 {
		l := func() { large += introspectFor(b, ts, c, tok, 500*time.Millisecond) }
		s := func() { smallN += introspectFor(b, small, sc, stok, 500*time.Millisecond) }
		if i%2 == 0 {
			l()
			s()
		} else {
			s()
			l()
		}
	}
	b.ReportMetric(float64(large)/float64(smallN), "x_small_db")
}

// introspectFor introspects tok with as many clients as the benchmarks use, for d, and
// returns how many answers came back.
func introspectFor(b *testing.B, ts *testServer, c testClient, tok string, d time.Duration) int64 {
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	return postFor(b, newPoster(ts.url+"/oauth/introspect", c), form, d)
}
