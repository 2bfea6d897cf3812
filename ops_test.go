package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHealthz: 200 while the database answers, 503 when it does not; nothing else is told.
func TestHealthz(t *testing.T) {
	ts := newTestServer(t)
	get := func() (int, map[string]any) {
		resp, err := http.Get(ts.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if code, m := get(); code != 200 || m["status"] != "ok" || len(m) != 1 {
		t.Fatalf("healthz = %d %v", code, m)
	}
	ts.s.store.db.Close() // the database goes away
	if code, m := get(); code != 503 || m["status"] != "unavailable" || len(m) != 1 {
		t.Fatalf("healthz without a database = %d %v", code, m)
	}
}

// TestConfigWarnings: an http issuer off loopback, or a public listener with one, is warned
// about at startup; requests for another Host are warned about once.
func TestConfigWarnings(t *testing.T) {
	for _, tt := range []struct {
		issuer, listen string
		want           []string
	}{
		{"https://auth.example", "0.0.0.0:443", nil},
		{"http://127.0.0.1:8080", "127.0.0.1:8080", []string{"passkeys are unavailable"}},
		{"http://localhost:8080", "[::1]:8080", nil},
		{"http://auth.example", "127.0.0.1:8080", []string{"clear text"}},
		{"http://127.0.0.1:8080", "0.0.0.0:8080", []string{"not loopback", "use a host name (-issuer http://localhost:8080"}},
		{"https://[2001:db8::1]", "[::]:443", []string{"IP address"}},
		{"http://auth.example", "[::]:80", []string{"clear text", "not loopback"}},
	} {
		got := configWarnings(config{Issuer: tt.issuer}, tt.listen)
		if len(got) != len(tt.want) {
			t.Errorf("configWarnings(%s, %s) = %q; want %d warnings", tt.issuer, tt.listen, got, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("configWarnings(%s, %s)[%d] = %q; want it to say %q", tt.issuer, tt.listen, i, got[i], w)
			}
		}
	}

	ts := newTestServer(t)
	for range 3 {
		req, _ := http.NewRequest("GET", ts.url+"/healthz", nil)
		req.Host = "wrong.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := strings.Count(ts.logs.String(), "another host than the issuer"); n != 1 {
		t.Fatalf("%d Host warnings; want 1:\n%s", n, ts.logs.String())
	}
}

// TestNetworkFS: a database on NFS/SMB/CIFS is refused at start with an explanation, unless
// -allow-network-fs.
func TestNetworkFS(t *testing.T) {
	dir := t.TempDir()
	nfs := func(string) (int64, error) { return 0x6969, nil }
	cfg := defaultConfig()
	cfg.DB, cfg.FSType, cfg.KeyGen = filepath.Join(dir, "oauthd.db"), nfs, cachedKey
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = serve(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if err == nil || !strings.Contains(err.Error(), "NFS") || !strings.Contains(err.Error(), "-allow-network-fs") {
		t.Fatalf("serve on NFS = %v; want a refusal naming NFS and -allow-network-fs", err)
	}
	cfg.AllowNetFS = true
	if err := checkFS(cfg, cfg.DB); err != nil {
		t.Fatalf("with -allow-network-fs: %v", err)
	}
	cfg.AllowNetFS = false
	cfg.FSType = func(string) (int64, error) { return 0xEF53, nil } // ext4
	if err := checkFS(cfg, cfg.DB); err != nil {
		t.Fatalf("ext4: %v", err)
	}
	if _, err := statfsType(dir); err != nil {
		t.Logf("statfs here: %v", err)
	}
}

// TestBackup: "oauthd backup" copies a consistent database while the server writes to it; the
// copy passes integrity_check and serves the tokens issued before it (the restore procedure).
func TestBackup(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	c := ts.addServiceClient("read")
	issue := func() string {
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret)
		if r.Status != 200 {
			t.Errorf("token = %d %s", r.Status, r.Raw)
		}
		return str(r.JSON["access_token"])
	}
	before := issue()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 { // writes go on during the backup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					issue()
				}
			}
		}()
	}
	dst := filepath.Join(t.TempDir(), "backup.db")
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"backup", "-db", ts.s.cfg.DB, dst}, nil, &out, &errOut, func(string) string { return "" })
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(out.String(), "backed up") {
		t.Fatalf("backup = %d %s %s", code, out.String(), errOut.String())
	}
	db, err := sql.Open("sqlite", dsn(dst))
	if err != nil {
		t.Fatal(err)
	}
	var check string
	db.QueryRow("PRAGMA integrity_check").Scan(&check)
	db.Close()
	if check != "ok" {
		t.Fatalf("integrity_check of the backup = %q", check)
	}
	// Restore: a server started on the copy knows the client and the token issued before.
	restored := newTestServer(t, func(cfg *config) { cfg.DB = dst })
	restored.clock.t = ts.clock.Now()
	if !restored.active(c, before) {
		t.Fatal("a token issued before the backup is not active on the restored copy")
	}
	// An existing file is never overwritten; a missing database is not created.
	if code := run(ctx, []string{"backup", "-db", ts.s.cfg.DB, dst}, nil, &out, &errOut, func(string) string { return "" }); code == 0 {
		t.Fatal("backup overwrote an existing file")
	}
	missing := filepath.Join(t.TempDir(), "none.db")
	errOut.Reset()
	if code := run(ctx, []string{"backup", "-db", missing, dst + "2"}, nil, &out, &errOut, func(string) string { return "" }); code == 0 ||
		!strings.Contains(errOut.String(), "none.db") {
		t.Fatalf("backup of a missing database = %d %s", code, errOut.String())
	}
}

// writerPragma sets a pragma on both connections of the write pool (the writer may use
// either), simulating a full or read-only disk.
func writerPragma(t *testing.T, st *store, pragma string) {
	t.Helper()
	ctx := context.Background()
	var conns []*sql.Conn
	for range 2 {
		c, err := st.wdb.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		if _, err := c.ExecContext(ctx, "PRAGMA "+pragma); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// TestStorageFaults: with the database full or read-only, the token endpoint answers 503
// temporarily_unavailable and pages a 503 page; nothing half-written is left, every token
// that was answered is stored, and the server recovers by itself when the disk does.
func TestStorageFaults(t *testing.T) {
	ts := newTestServer(t)
	st := ts.s.store
	c := ts.addServiceClient("read")
	ts.addUser("alice", "correct horse battery")
	token := func() tokenCall {
		return ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret)
	}
	var answered []string
	for _, fault := range []struct{ name, on, off string }{
		{"full", "max_page_count = 1", "max_page_count = 1073741823"},
		{"read-only", "query_only = 1", "query_only = 0"},
	} {
		var page int
		st.db.QueryRow("PRAGMA page_count").Scan(&page)
		on := fault.on
		if fault.name == "full" {
			on = "max_page_count = " + strconv.Itoa(page) // no room to grow
		}
		writerPragma(t, st, on)
		ok, refused := 0, 0
		for range 300 { // until the database has no room left (full) or at once (read-only)
			r := token()
			switch {
			case r.Status == 200:
				ok++
				answered = append(answered, str(r.JSON["access_token"]))
				continue
			case r.Status == 503 && str(r.JSON["error"]) == errTemporarilyUnavailable && r.JSON["access_token"] == nil:
				refused++
			default:
				t.Fatalf("%s: token = %d %s", fault.name, r.Status, r.Raw)
			}
			if refused >= 3 {
				break
			}
		}
		if refused == 0 {
			t.Fatalf("%s: the fault never showed", fault.name)
		}
		for i := 0; ; i++ { // a session row may still fit into a page with room (full)
			p := ts.loginAs("alice", "correct horse battery", "")
			if p.StatusCode == 503 && strings.Contains(p.Body, "Temporarily unavailable") {
				break
			}
			if p.StatusCode != http.StatusSeeOther || i == 200 {
				t.Fatalf("%s: login = %d; want the 503 page", fault.name, p.StatusCode)
			}
		}
		if !strings.Contains(ts.logs.String(), "request refused") {
			t.Fatalf("%s: the refusal was not logged", fault.name)
		}
		writerPragma(t, st, fault.off)
		if r := token(); r.Status != 200 {
			t.Fatalf("%s: after the disk recovered: %d %s", fault.name, r.Status, r.Raw)
		}
		if p := ts.loginAs("alice", "correct horse battery", ""); p.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: login after recovery = %d", fault.name, p.StatusCode)
		}
		t.Logf("%s: %d tokens answered before the fault showed", fault.name, ok)
	}
	// Every token answered is stored; nothing else is (no half-written grant: a grant
	// without tokens would be one).
	for _, tok := range answered {
		if !ts.active(c, tok) {
			t.Fatal("a token answered during the fault is not active")
		}
	}
	var orphans int
	st.db.QueryRow("SELECT count(*) FROM grants g WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE grant_id = g.id) AND NOT EXISTS (SELECT 1 FROM codes WHERE grant_id = g.id)").Scan(&orphans)
	if orphans != 0 {
		t.Fatalf("%d grants without tokens", orphans)
	}
	var check string
	st.db.QueryRow("PRAGMA integrity_check").Scan(&check)
	if check != "ok" {
		t.Fatalf("integrity_check = %q", check)
	}
}

// TestCheck: "oauthd check" against a live server: a checklist, non-zero exit on failures,
// the client round trip with -client and OAUTHD_SECRET.
func TestCheck(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	c := ts.addServiceClient("read")
	ts.s.now = time.Now // the clock check compares with this machine's
	runIt := func(env map[string]string, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, append([]string{"check"}, args...), nil, &out, &errOut, func(k string) string { return env[k] })
		return code, out.String() + errOut.String()
	}
	code, out := runIt(map[string]string{"OAUTHD_SECRET": c.Secret}, "-client", c.ID, ts.url)
	if code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, "client: introspection round trip works") ||
		!strings.Contains(out, "issuer: "+ts.url+" matches") || !strings.Contains(out, "warn  TLS: plain http") {
		t.Fatalf("check of a healthy deployment = %d\n%s", code, out)
	}
	var live int
	ts.s.store.db.QueryRow("SELECT count(*) FROM tokens").Scan(&live)
	if live != 0 {
		t.Fatalf("check left %d tokens behind", live)
	}
	// Reached under another name than its issuer: the issuer check fails, and so does the run.
	other := strings.Replace(ts.url, "127.0.0.1", "localhost", 1)
	code, out = runIt(nil, other)
	if code != 1 || !strings.Contains(out, "FAIL  issuer") || !strings.Contains(out, "checks failed") {
		t.Fatalf("check under another host = %d\n%s", code, out)
	}
	code, out = runIt(nil, "-client", c.ID, "-secret", "wrong", ts.url)
	if code != 1 || !strings.Contains(out, "wrong client_id or secret") {
		t.Fatalf("check with a wrong secret = %d\n%s", code, out)
	}
	if code, _ := runIt(nil, "-client", c.ID, ts.url); code != 2 {
		t.Fatalf("-client without a secret = %d; want a usage error", code)
	}
	code, out = runIt(nil, "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(out, "unreachable") {
		t.Fatalf("check of nothing = %d\n%s", code, out)
	}
	// A certificate that does not verify (self-signed) is a failure, said as such.
	tlsSrv := httptest.NewUnstartedServer(ts.s.routes())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake error is expected
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	code, out = runIt(nil, tlsSrv.URL)
	if code != 1 || !strings.Contains(out, "FAIL  TLS: the certificate does not verify") {
		t.Fatalf("check of a self-signed deployment = %d\n%s", code, out)
	}
}
