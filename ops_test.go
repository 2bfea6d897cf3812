package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
		{"http://127.0.0.1:8080", "127.0.0.1:8080", nil},
		{"http://localhost:8080", "[::1]:8080", nil},
		{"http://auth.example", "127.0.0.1:8080", []string{"clear text"}},
		{"http://127.0.0.1:8080", "0.0.0.0:8080", []string{"not loopback"}},
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
	svc, _ := clientSpec{Name: "svc", Scope: "read", GrantTypes: []string{grantClientCredentials}}.build()
	c := testClient{client: svc, Secret: newSecret()}
	c.SecretHash = hashSecret(c.Secret)
	if err := ts.s.store.createClient(ctx, c.client); err != nil {
		t.Fatal(err)
	}
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
