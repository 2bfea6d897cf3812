package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cli runs the oauthd command line in process.
func cli(t testing.TB, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

// TestServeConfig: defaults, OAUTHD_* variables, and the command line winning over them.
func TestServeConfig(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cfg, _, err := serveConfig(nil, &bytes.Buffer{}, getenv)
	if err != nil || cfg.Addr != "127.0.0.1:8080" || cfg.DB != "oauthd.db" || cfg.Issuer != "http://127.0.0.1:8080" ||
		cfg.TokenTTL != time.Hour || cfg.RefreshGrace != 10*time.Second || cfg.PasswordIter < 600_000 {
		t.Fatalf("defaults = %+v, %v", cfg, err)
	}
	env["OAUTHD_ADDR"] = "127.0.0.1:9999"
	env["OAUTHD_TOKEN_TTL"] = "5m"
	env["OAUTHD_LOG_LEVEL"] = "debug"
	cfg, _, err = serveConfig(nil, &bytes.Buffer{}, getenv)
	if err != nil || cfg.Addr != "127.0.0.1:9999" || cfg.Issuer != "http://127.0.0.1:9999" || cfg.TokenTTL != 5*time.Minute || cfg.LogLevel != "debug" {
		t.Fatalf("from the environment = %+v, %v", cfg, err)
	}
	cfg, _, err = serveConfig([]string{"-addr", "127.0.0.1:7000", "-issuer", "https://auth.example/"}, &bytes.Buffer{}, getenv)
	if err != nil || cfg.Addr != "127.0.0.1:7000" || cfg.Issuer != "https://auth.example" {
		t.Fatalf("flag over environment = %+v, %v", cfg, err)
	}
	// JSON log lines, one object per line, through the same flags and variables.
	var logs bytes.Buffer
	cfg, log, err := serveConfig([]string{"-log-format", "json"}, &logs, func(k string) string {
		return map[string]string{"OAUTHD_TRUSTED_PROXY": "10.0.0.0/8, ::1", "OAUTHD_ALLOW_NETWORK_FS": "true"}[k]
	})
	if err != nil || cfg.TrustedProxy != "10.0.0.0/8, ::1" || !cfg.AllowNetFS {
		t.Fatalf("-log-format json with OAUTHD_TRUSTED_PROXY, OAUTHD_ALLOW_NETWORK_FS = %+v, %v", cfg, err)
	}
	log.Info("tokens issued", "client_id", "c1")
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line["msg"] != "tokens issued" || line["client_id"] != "c1" {
		t.Fatalf("a JSON log line = %q (%v)", logs.String(), err)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-log-level", "loud"}, nil, "-log-level"},
		{[]string{"-issuer", "ftp://x"}, nil, "issuer"},
		{[]string{"-issuer", "https://x/auth/../admin"}, nil, "path"},
		{[]string{"-token-ttl", "0s"}, nil, "token-ttl"},
		{[]string{"-bogus"}, nil, "bogus"},
		{[]string{"extra"}, nil, "extra"},
		{nil, map[string]string{"OAUTHD_TOKEN_TTL": "soon"}, "OAUTHD_TOKEN_TTL"},
		{[]string{"-log-format", "xml"}, nil, "-log-format"},
		{[]string{"-trusted-proxy", "10.0.0.0/33"}, nil, "-trusted-proxy"},
		{nil, map[string]string{"OAUTHD_TRUSTED_PROXY": "proxy.example"}, "-trusted-proxy"},
	} {
		env = tt.env
		if _, _, err := serveConfig(tt.args, &bytes.Buffer{}, getenv); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("serveConfig(%q, %v) = %v; want an error naming %q", tt.args, tt.env, err, tt.want)
		}
	}
}

// TestServeShutdown starts the real server, checks the startup log and the first-run setup
// URL, and shuts it down while a request is in flight: the request completes.
func TestServeShutdown(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DB = filepath.Join(dir, "new.db")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	cfg.Issuer = "http://" + cfg.Addr
	cfg.KeyGen = cachedKey
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), ln) }()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "setup_url_file") })
	for _, want := range []string{"issuer=" + cfg.Issuer, "addr=" + cfg.Addr, "db=" + cfg.DB, "setup_url_file=" + cfg.DB + "-setup-url"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("startup log lacks %q:\n%s", want, logs.String())
		}
	}
	// The setup URL, with its token, is in a private file and not in the log.
	fi, err := os.Stat(cfg.DB + "-setup-url")
	setupURL, _ := os.ReadFile(cfg.DB + "-setup-url")
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(string(setupURL), cfg.Issuer+"/setup?token=") {
		t.Fatalf("the setup URL file: %v %v %q", err, fi.Mode(), setupURL)
	}
	if strings.Contains(logs.String(), "token=") {
		t.Fatalf("the setup token reached the log:\n%s", logs.String())
	}
	if _, err := os.Stat(cfg.DB); err != nil {
		t.Fatalf("database not created: %v", err)
	}

	// A request whose body is still arriving when shutdown starts.
	conn, err := net.Dial("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := "grant_type=refresh_token&refresh_token=x&client_id=nobody"
	fmt.Fprintf(conn, "POST /oauth/token HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
		cfg.Addr, len(body), body[:10])
	time.Sleep(50 * time.Millisecond)
	cancel()
	time.Sleep(50 * time.Millisecond)
	fmt.Fprint(conn, body[10:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request lost at shutdown: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("in-flight request = %d; want its real answer (401)", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after shutdown")
	}
	// Closed cleanly: the database reopens and the WAL was checkpointed away.
	st, err := openStore(context.Background(), cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

// TestSignalShutdown: SIGTERM, as a service manager sends it, stops the server cleanly.
func TestSignalShutdown(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sig.db")
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"-addr", "127.0.0.1:0", "-db", db}, strings.NewReader(""), &bytes.Buffer{}, logs, func(string) string { return "" })
	}()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "oauthd listening") })
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(logs.String(), "msg=stopped") {
			t.Fatalf("run after SIGTERM = %d; log:\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop the server")
	}
}

// waitFor polls cond for up to 30 s (a real server generates an RSA key first, which is slow
// under -race); it returns as soon as cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out waiting")
}

// TestUserCLI covers user add/list/del/passwd, -db and OAUTHD_DB.
func TestUserCLI(t *testing.T) {
	db := filepath.Join(t.TempDir(), "u.db")
	code, out, errs := cli(t, nil, "correct horse battery\n", "user", "add", "-db", db, "-admin", "alice")
	var u map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &u) != nil || u["username"] != "alice" || u["admin"] != true || str(u["sub"]) == "" {
		t.Fatalf("user add = %d %q %q", code, out, errs)
	}
	st, _ := openStore(context.Background(), db)
	stored, _ := st.userByName(context.Background(), "alice")
	st.Close()
	if !strings.HasPrefix(stored.PasswordHash, "pbkdf2-sha256$600000$") || strings.Contains(stored.PasswordHash, "correct horse") {
		t.Fatalf("stored hash %q; want PBKDF2-SHA256 with 600000 iterations", stored.PasswordHash)
	}
	if !checkPassword("correct horse battery", stored.PasswordHash) || checkPassword("wrong", stored.PasswordHash) {
		t.Fatal("checkPassword disagrees with the stored hash")
	}
	env := map[string]string{"OAUTHD_DB": db}
	for _, tt := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"x\n", []string{"user", "add", "alice"}, 1, "at least 8"},
		{"another password\n", []string{"user", "add", "ALICE"}, 1, "already exists"},
		{"", []string{"user", "add", "bob"}, 1, "no password"},
		{"long enough pw\n", []string{"user", "add", "bad name"}, 1, "username"},
		{"", []string{"user", "add"}, 2, "argument"},
		{"", []string{"user", "frob"}, 2, "unknown"},
		{"", []string{"user", "del", "nobody"}, 1, "no user"},
		{"", []string{"user", "passwd", "nobody"}, 1, "no user"},
		{"", []string{"nonsense"}, 2, "unknown command"},
	} {
		if code, _, errs := cli(t, env, tt.stdin, tt.args...); code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("oauthd %q = %d %q; want %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
	if code, _, errs := cli(t, env, "bob's password\r\n", "user", "add", "bob"); code != 0 {
		t.Fatalf("user add bob via OAUTHD_DB = %d %s", code, errs)
	}
	_, out, _ = cli(t, env, "", "user", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"username":"alice"`) || !strings.Contains(lines[1], `"username":"bob"`) || strings.Contains(out, "pbkdf2") {
		t.Fatalf("user list = %q", out)
	}
	if code, _, errs := cli(t, env, "a new password\n", "user", "passwd", "bob"); code != 0 {
		t.Fatalf("user passwd = %d %s", code, errs)
	}
	st, _ = openStore(context.Background(), db)
	bob, _ := st.userByName(context.Background(), "bob")
	st.Close()
	if !checkPassword("a new password", bob.PasswordHash) {
		t.Fatal("passwd did not change the password")
	}
	if code, _, _ := cli(t, env, "", "user", "del", "bob"); code != 0 {
		t.Fatal("user del failed")
	}
	if _, out, _ = cli(t, env, "", "user", "list"); strings.Contains(out, "bob") {
		t.Fatalf("bob still listed: %q", out)
	}
}

// TestClientCLI covers client add/list/del/rotate-secret and their JSON.
func TestClientCLI(t *testing.T) {
	env := map[string]string{"OAUTHD_DB": filepath.Join(t.TempDir(), "c.db")}
	code, out, errs := cli(t, env, "", "client", "add", "-name", "Gallery", "-redirect-uri", "https://g.example/cb",
		"-redirect-uri", "http://127.0.0.1/cb", "-scope", "read write", "-description", "Photos")
	var c map[string]any
	if code != 0 || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &c) != nil {
		t.Fatalf("client add = %d %q %q", code, out, errs)
	}
	keys := []string{}
	for k := range c {
		keys = append(keys, k)
	}
	if len(c) != 5 || c["name"] != "Gallery" || c["public"] != false || len(str(c["client_secret"])) != 43 || str(c["client_id"]) == "" ||
		fmt.Sprint(c["redirect_uris"]) != "[https://g.example/cb http://127.0.0.1/cb]" {
		t.Fatalf("client add JSON = %s (keys %v)", out, keys)
	}
	id, secret := str(c["client_id"]), str(c["client_secret"])
	_, out, _ = cli(t, env, "", "client", "add", "-name", "CLI", "-public", "-redirect-uri", "com.example.cli:/cb")
	var p map[string]any
	json.Unmarshal([]byte(out), &p)
	if _, has := p["client_secret"]; has || p["public"] != true {
		t.Fatalf("public client add = %s", out)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"client", "add", "-redirect-uri", "https://x.example/cb"}, 2, "a name is required"},
		{[]string{"client", "add", "-name", "X"}, 2, "redirect URI is required"},
		{[]string{"client", "add", "-name", "X", "-grant", "password"}, 2, "unknown grant type"},
		{[]string{"client", "add", "-name", "X", "-public", "-grant", "client_credentials"}, 2, "public clients cannot"},
		{[]string{"client", "add", "-name", "X", "-redirect-uri", "http://x.example/cb"}, 2, "https"},
		{[]string{"client", "add", "-name", "X", "-redirect-uri", "https://x.example/cb#f"}, 2, "fragment"},
		{[]string{"client", "add", "-name", "X", "-redirect-uri", "myapp:/cb"}, 2, "public"},
		{[]string{"client", "add", "-name", "X", "-redirect-uri", "https://x.example/cb", "-scope", `a"b`}, 2, "scope"},
		{[]string{"client", "del", "nope"}, 1, "no client"},
		{[]string{"client", "rotate-secret", "nope"}, 1, "no client"},
		{[]string{"client", "rotate-secret", str(p["client_id"])}, 1, "public"},
		{[]string{"client", "del"}, 2, "takes 1 argument"},
		{[]string{"client", "del", "a", "b"}, 2, "takes 1 argument"},
	} {
		if code, _, errs := cli(t, env, "", tt.args...); code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("oauthd %q = %d %q; want %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
	_, out, _ = cli(t, env, "", "client", "list")
	if strings.Count(out, "\n") != 2 || strings.Contains(out, secret) || strings.Contains(out, "secret") || !strings.Contains(out, `"scope":"read write"`) {
		t.Fatalf("client list = %q", out)
	}
	code, out, _ = cli(t, nil, "", "client", "rotate-secret", id, "-db", env["OAUTHD_DB"]) // -db after the id, as the usage line has it
	var rot map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &rot) != nil || rot["client_id"] != id || len(rot["client_secret"]) != 43 || rot["client_secret"] == secret {
		t.Fatalf("rotate-secret = %d %q", code, out)
	}
	st, _ := openStore(context.Background(), env["OAUTHD_DB"])
	sc, _ := st.clientByID(context.Background(), id)
	st.Close()
	if !bytes.Equal(sc.SecretHash, hashSecret(rot["client_secret"])) {
		t.Fatal("the rotated secret is not what is stored (as a hash)")
	}
	if code, _, _ := cli(t, env, "", "client", "del", id); code != 0 {
		t.Fatal("client del failed")
	}
	if _, out, _ = cli(t, env, "", "client", "list"); strings.Contains(out, id) {
		t.Fatal("deleted client still listed")
	}
}

// TestMigrations: a new file gets the whole schema, reopening is a no-op, and a database from
// a newer oauthd is refused with a clear error.
func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // an empty file
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		st, err := openStore(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var v int
		var mode string
		st.db.QueryRow("PRAGMA user_version").Scan(&v)
		st.db.QueryRow("PRAGMA journal_mode").Scan(&mode)
		var fk, sync int
		st.db.QueryRow("PRAGMA foreign_keys").Scan(&fk)
		st.db.QueryRow("PRAGMA synchronous").Scan(&sync)
		if v != len(migrations) || mode != "wal" || fk != 1 || sync != 2 {
			t.Fatalf("open %d: user_version %d journal %s foreign_keys %d synchronous %d", i, v, mode, fk, sync)
		}
		if i == 1 {
			st.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
		}
		st.Close()
	}
	_, err := openStore(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer database = %v; want a clear error", err)
	}
}

// TestNoSecretsAtRestOrInLogs runs every kind of flow with a debug log, then checks that no
// token, code, secret or password appears in the log or in the database files.
func TestNoSecretsAtRestOrInLogs(t *testing.T) {
	ts := newTestServer(t)
	const password = "correct horse battery"
	ts.addUser("alice", password)
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", password)
	ts.browser("alice", "a wrong password").login()
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	ts.exchange(c, code, ver) // replay
	code2, ver2 := b.getCode(c)
	tok2 := ts.exchange(c, code2, ver2)
	ref := ts.refresh(c, str(tok2.JSON["refresh_token"]))
	ts.refresh(c, str(tok2.JSON["refresh_token"])) // within grace
	ts.active(c, str(ref.JSON["access_token"]))
	ts.postToken("/oauth/revoke", url.Values{"token": {str(ref.JSON["refresh_token"])}}, c.ID, c.Secret)
	ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope"}}, c.ID, "wrong-secret-value")

	var session string
	u, _ := url.Parse(ts.url)
	for _, ck := range b.c.Jar.Cookies(u) {
		if ck.Name == "oauthd_session" {
			session = ck.Value
		}
	}
	secrets := map[string]string{
		"password": password, "wrong password": "a wrong password", "client secret": c.Secret, "code": code, "code2": code2,
		"verifier": ver, "session cookie": session, "wrong secret": "wrong-secret-value",
	}
	for _, r := range []tokenCall{tok, tok2, ref} {
		secrets["access token "+str(r.JSON["access_token"])[:6]] = str(r.JSON["access_token"])
		secrets["refresh token "+str(r.JSON["refresh_token"])[:6]] = str(r.JSON["refresh_token"])
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "tokens issued") || !strings.Contains(logs, "login failed") {
		t.Fatalf("the log does not record the flow:\n%s", logs)
	}
	var files []byte
	for _, suffix := range []string{"", "-wal"} {
		b, _ := os.ReadFile(ts.s.cfg.DB + suffix)
		files = append(files, b...)
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s not captured", what)
		}
		if strings.Contains(logs, s) || strings.Contains(logs, url.QueryEscape(s)) {
			t.Errorf("the log contains the %s", what)
		}
		if bytes.Contains(files, []byte(s)) {
			t.Errorf("the database files contain the %s in plain text", what)
		}
	}
}

// TestHelp: -h and help print usage and flags with their defaults (exit 0) for the server and
// every subcommand; an unknown command prints the list (exit 2); version reads the build info.
func TestHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"Server flags", "-addr string", `(default "127.0.0.1:8080")`, "-refresh-grace duration", "(default 10s)", "-registration-scopes"}},
		{[]string{"help"}, []string{"Server flags", "-token-ttl duration"}},
		{[]string{"--help"}, []string{"Server flags"}},
		{[]string{"client", "add", "-h"}, []string{"usage: oauthd client add", "-redirect-uri value", "-id-token-alg string", `(default "RS256")`}},
		{[]string{"help", "client", "add"}, []string{"usage: oauthd client add", "-always-refresh"}},
		{[]string{"client", "-h"}, []string{"oauthd client add -name NAME", "oauthd client list"}},
		{[]string{"help", "user"}, []string{"oauthd user add", "oauthd user list"}},
		{[]string{"user", "add", "-h"}, []string{"usage: oauthd user add", "-admin", "-email string"}},
		{[]string{"user", "list", "-h"}, []string{"usage: oauthd user list", "-db string"}},
		{[]string{"keys", "rotate", "-h"}, []string{"usage: oauthd keys rotate", "-db string"}},
		{[]string{"registration-token", "create", "-h"}, []string{"-grant value", "-scope string", "-ttl duration", "(default 24h0m0s)"}},
		{[]string{"backup", "-h"}, []string{"usage: oauthd backup", "FILE"}},
		{[]string{"check", "-h"}, []string{"usage: oauthd check", "-timeout duration"}},
	} {
		code, out, errs := cli(t, nil, "", tt.args...)
		if code != 0 {
			t.Errorf("oauthd %v = %d %q", tt.args, code, errs)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("oauthd %v does not print %q:\n%s", tt.args, w, out)
			}
		}
	}
	code, out, errs := cli(t, nil, "", "frobnicate")
	if code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) || !strings.Contains(errs, "oauthd client add") || out != "" {
		t.Errorf("an unknown command = %d %q %q", code, out, errs)
	}
	code, out, _ = cli(t, nil, "", "version")
	if code != 0 || !strings.HasPrefix(out, "oauthd ") || !strings.Contains(out, "go1.") {
		t.Errorf("version = %d %q", code, out)
	}
}
