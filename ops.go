package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Operations: health check, configuration and file-mode warnings, network file systems, backups.

// handleHealthz answers whether the server can reach its database: 200 {"status":"ok"} or
// 503 {"status":"unavailable"}. It says nothing else (no version, no counts, no paths).
func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var n int64
	if err := s.store.queryRow(ctx, generationQuery).Scan(&n); err != nil {
		s.log.Error("health check: the database is unreachable", "cause", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// watchHost warns once when requests arrive for another host than the issuer's: if clients
// really reach the server under that name, the issuer (-issuer) is wrong and they will reject
// its tokens and discovery; if a reverse proxy rewrites Host, the warning is harmless.
func (s *server) watchHost(next http.Handler) http.Handler {
	want := strings.TrimPrefix(strings.TrimPrefix(s.cfg.Issuer, "https://"), "http://")
	want, _, _ = strings.Cut(want, "/") // an issuer with a path (prefix.go)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A forward-auth check keeps the app's Host (Caddy's forward_auth does): not a sign of a wrong issuer.
		if r.Host != "" && !strings.EqualFold(r.Host, want) && !s.hostWarned.Load() && r.URL.Path != s.path("/oauth/forward-auth") && r.URL.Path != s.path("/oauth/auth-request") &&
			s.hostWarned.CompareAndSwap(false, true) {
			s.log.Warn("a request arrived for another host than the issuer's: if clients reach oauthd under that name, set -issuer to it (they check iss and the discovery URLs); if a reverse proxy rewrites Host, ignore this",
				"request_host", r.Host, "issuer", s.cfg.Issuer)
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRefusals logs every page refused to a person (an HTML answer of 400 or more); the JSON
// endpoints log their refusals in writeError, with the RFC 6749 error code.
func (s *server) logRefusals(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
			level := slog.LevelInfo
			if sw.status >= 500 {
				level = slog.LevelError
			}
			s.log.Log(r.Context(), level, "page refused", "method", r.Method, "path", r.URL.Path, "status", sw.status, "from", s.sourceAddr(r))
		}
	})
}

// configWarnings are the startup warnings about a configuration that works but is unsafe.
func configWarnings(cfg config, listen string) []string {
	var out []string
	u, err := url.Parse(cfg.Issuer)
	if err != nil {
		return nil
	}
	if u.Scheme == "http" && !isLoopbackName(u.Hostname()) {
		out = append(out, fmt.Sprintf("the issuer %s is http on a non-loopback host: passwords, codes and tokens cross the network in clear text; serve it over TLS (a reverse proxy) and set -issuer https://…", cfg.Issuer))
	}
	if host, _, err := net.SplitHostPort(listen); err == nil && u.Scheme == "http" && !isLoopbackName(host) {
		out = append(out, fmt.Sprintf("listening on %s (not loopback) with an http issuer: anyone on the network can reach the login page without TLS", listen))
	}
	if w := passkeyWarning(cfg.Issuer); w != "" {
		out = append(out, w)
	}
	return out
}

// fileModeWarnings are the startup warnings about database files that other accounts on the
// machine may read or write: the keys table holds the ID token signing keys (PKCS #8) and the
// users table every password hash, so such an account can forge ID tokens and copy the hashes
// (the -wal file holds the same pages; a writable -shm lets it corrupt the database). oauthd
// creates its files 0600; an existing file is the operator's, so it is named with the fix
// rather than changed. A database directory that others may write (and not sticky) lets them
// replace the files.
func fileModeWarnings(dbPath string) []string {
	if runtime.GOOS == "windows" { // no POSIX modes
		return nil
	}
	var out []string
	for _, p := range []string{dbPath, dbPath + "-wal", dbPath + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		m := fi.Mode().Perm()
		var what string
		switch r, w := m&0o044 != 0, m&0o022 != 0; {
		case r && w:
			what = "readable and writable"
		case r:
			what = "readable"
		case w:
			what = "writable"
		default:
			continue
		}
		out = append(out, fmt.Sprintf("the database file %s is %s by other accounts (mode %04o): it holds the ID token signing keys and every password hash, "+
			"so anyone who can read it can forge ID tokens; fix it with: chmod 600 %s", p, what, m, p))
	}
	dir := filepath.Dir(dbPath)
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		out = append(out, fmt.Sprintf("the database directory %s is writable by every account (mode %04o): anyone can replace the database files; fix it with: chmod o-w %s",
			dir, fi.Mode().Perm(), dir))
	}
	return out
}

// isLoopbackName is true for localhost and loopback IP literals.
func isLoopbackName(h string) bool {
	return strings.EqualFold(h, "localhost") || isLoopbackHost(h)
}

// networkFSNames maps statfs f_type magic numbers of network file systems to their names.
// SQLite's locking is unreliable there, and WAL mode needs shared memory that they do not
// provide across machines (https://www.sqlite.org/wal.html, "WAL does not work over a
// network filesystem").
var networkFSNames = map[int64]string{
	0x6969:     "NFS",
	0x517B:     "SMB",
	0xFF534D42: "CIFS",
	0xFE534D42: "SMB2",
	0x5346414F: "AFS",
	0x00C36400: "CephFS",
	0x01021997: "9P",
	0x65735546: "FUSE (e.g. sshfs)",
}

// checkFS refuses a database directory on a network file system unless allowed.
func checkFS(cfg config, dbPath string) error {
	fsType := cfg.FSType
	if fsType == nil {
		fsType = statfsType
	}
	dir := filepath.Dir(dbPath)
	t, err := fsType(dir)
	if err != nil {
		return nil // unknown: nothing to say
	}
	name, network := networkFSNames[t]
	if !network || cfg.AllowNetFS {
		return nil
	}
	return fmt.Errorf("the database directory %s is on %s, a network file system: SQLite's locks and its WAL shared memory are not reliable there and the database can be corrupted; put it on a local disk, or start with -allow-network-fs if this file system is known to be safe", dir, name)
}

// backup writes a consistent copy of the database at dbPath into dst with VACUUM INTO. It
// works while the server runs (it is one read transaction); dst must not exist. dst is
// created first, empty and readable only by this account (O_EXCL: never an existing file,
// never through a symbolic link), and VACUUM INTO fills it: SQLite would create it 0644 less
// the umask, and a backup holds the signing keys and password hashes as the database does.
// The copy is fsynced before backup returns; a failed copy is removed.
func backup(ctx context.Context, dbPath, dst string) error {
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("database %s: %w", dbPath, err)
	}
	abs, err := filepath.Abs(dst)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists; choose a new file name", dst)
	} else if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(dbPath))
	if err != nil {
		os.Remove(abs)
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", abs); err != nil {
		os.Remove(abs)
		return fmt.Errorf("backup: %w", err)
	}
	f, err = os.Open(abs)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = syncDir(abs)
	}
	if err != nil {
		os.Remove(abs)
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
