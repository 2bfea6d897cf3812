package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestNewDatabaseFile: a database oauthd creates is readable by its account alone, as are
// the WAL files SQLite makes beside it, and has 2 KiB pages in WAL mode; an existing file
// keeps its page size.
func TestNewDatabaseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.db")
	st, err := openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	var page int
	var mode string
	st.db.QueryRow("PRAGMA page_size").Scan(&page)
	st.db.QueryRow("PRAGMA journal_mode").Scan(&mode)
	if page != 2048 || mode != "wal" {
		t.Errorf("new database: page_size %d, journal_mode %q; want 2048, wal", page, mode)
	}
	if runtime.GOOS != "windows" {
		for _, f := range []string{path, path + "-wal", path + "-shm"} {
			if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v; want mode 0600", filepath.Base(f), fi.Mode().Perm(), err)
			}
		}
	}
	st.Close()

	// A database made elsewhere with SQLite's default pages keeps them.
	old := filepath.Join(dir, "old.db")
	db, err := sql.Open("sqlite", "file:"+old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t(x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err = openStore(context.Background(), old)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.db.QueryRow("PRAGMA page_size").Scan(&page)
	if page != 4096 {
		t.Errorf("existing database: page_size %d; want its own 4096", page)
	}
}
