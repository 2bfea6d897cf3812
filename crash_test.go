package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCrashSafety builds the real binary, loads it with token issuance and revocation from
// several goroutines, SIGKILLs it mid-load, restarts it on the same file and checks that
// every acknowledged token is active, every acknowledged revocation holds, and the database
// passes integrity_check. Ten rounds.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("SIGKILL semantics")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "oauthd")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	db := filepath.Join(dir, "oauthd.db")
	out, err := exec.Command(bin, "client", "add", "-db", db, "-name", "load", "-grant", "client_credentials", "-scope", "read").Output()
	if err != nil {
		t.Fatalf("client add: %v", err)
	}
	var cl struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(out, &cl); err != nil || cl.ClientSecret == "" {
		t.Fatalf("client add printed %s", out)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	post := func(base, path string, form url.Values) (int, map[string]any, error) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(cl.ClientID), url.QueryEscape(cl.ClientSecret))
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m, nil
	}

	var issued, revoked []string // acknowledged, over all rounds
	tried := map[string]bool{}   // revocations sent: without an answer their outcome is unknown
	check := func(base string, toks []string, want bool) {
		t.Helper()
		for _, tok := range toks {
			code, m, err := post(base, "/oauth/introspect", url.Values{"token": {tok}})
			if err != nil || code != 200 {
				t.Fatalf("introspect after restart: %d %v", code, err)
			}
			if m["active"] != want {
				t.Fatalf("after the crash a token acknowledged as %s is active=%v", map[bool]string{true: "issued", false: "revoked"}[want], m["active"])
			}
		}
	}
	for round := range 11 { // ten crashes, and a last start to check the tenth
		base, proc, logs := startBinary(t, bin, db)
		// Everything acknowledged so far holds (all of the last round, a sample of older ones).
		live := liveTokens(issued, tried)
		check(base, sample(live, 300), true)
		check(base, sample(revoked, 300), false)
		if round == 10 {
			proc.Process.Signal(syscall.SIGTERM)
			proc.Wait()
			break
		}
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []string
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if g%2 == 1 && i%3 == 2 && len(mine) > 0 { // revoke one of ours
						tok := mine[len(mine)-1]
						mine = mine[:len(mine)-1]
						mu.Lock()
						tried[tok] = true
						mu.Unlock()
						code, _, err := post(base, "/oauth/revoke", url.Values{"token": {tok}})
						if err != nil {
							return // the server is gone
						}
						if code == 200 {
							mu.Lock()
							revoked = append(revoked, tok)
							mu.Unlock()
						}
						continue
					}
					code, m, err := post(base, "/oauth/token", url.Values{"grant_type": {"client_credentials"}})
					if err != nil {
						return
					}
					if code == 200 {
						tok, _ := m["access_token"].(string)
						mine = append(mine, tok)
						mu.Lock()
						issued = append(issued, tok)
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(150+rand.IntN(400)) * time.Millisecond)
		proc.Process.Signal(syscall.SIGKILL)
		proc.Wait()
		close(stop)
		wg.Wait()
		if logs.Len() > 0 && strings.Contains(logs.String(), "panic") {
			t.Fatalf("the server panicked:\n%s", logs.String())
		}
		if got := integrity(t, db); got != "ok" {
			t.Fatalf("round %d: integrity_check after SIGKILL = %q", round+1, got)
		}
	}
	if len(issued) < 100 || len(revoked) == 0 {
		t.Fatalf("the load did too little to mean anything: %d tokens, %d revocations", len(issued), len(revoked))
	}
	// The last start checked everything of the tenth round; check every token once more.
	base, proc, _ := startBinary(t, bin, db)
	check(base, liveTokens(issued, tried), true)
	check(base, revoked, false)
	proc.Process.Signal(syscall.SIGTERM)
	proc.Wait()
	if got := integrity(t, db); got != "ok" {
		t.Fatalf("integrity_check = %q", got)
	}
	t.Logf("%d tokens and %d revocations acknowledged across 10 SIGKILLs; all held", len(issued), len(revoked))
}

// startBinary runs the server on a free port and waits until /healthz answers.
func startBinary(t *testing.T, bin, db string) (string, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-db", db, "-addr", addr, "-issuer", "http://"+addr)
	logs := &bytes.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base, cmd, logs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not come up: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// integrity runs PRAGMA integrity_check on the database file.
func integrity(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Sprint(err)
	}
	return res
}

// liveTokens are the issued tokens nobody tried to revoke.
func liveTokens(issued []string, gone map[string]bool) []string {
	var live []string
	for _, tok := range issued {
		if !gone[tok] {
			live = append(live, tok)
		}
	}
	return live
}

// sample is the last n of toks and up to n others picked at random.
func sample(toks []string, n int) []string {
	if len(toks) <= 2*n {
		return toks
	}
	out := append([]string(nil), toks[len(toks)-n:]...)
	for range n {
		out = append(out, toks[rand.IntN(len(toks)-n)])
	}
	return out
}
