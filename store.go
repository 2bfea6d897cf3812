package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite"
)

// Store sentinel errors: the boundary between SQL and protocol logic.
var (
	errNotFound      = errors.New("not found")
	errExists        = errors.New("already exists")
	errExpired       = errors.New("expired")
	errCodeReused    = errors.New("authorization code already used")
	errRefreshReused = errors.New("refresh token already used")
	errWrongClient   = errors.New("issued to another client")
)

// store is the SQLite database: every table oauthd keeps, behind small typed methods.
type store struct {
	db    *sql.DB       // the read pool (and small one-statement writes)
	wdb   *sql.DB       // the one write connection behind w
	w     *writer       // group commit for every st.tx
	ckpt  *checkpointer // WAL checkpoints beside the writer; nil: SQLite's own, inside COMMIT
	cache *cache
	path  string

	walHdr  *walHeader               // the -shm header, to skip generation reads when nothing committed
	wal     *walSync                 // the writer fsyncs the WAL through it; nil when commits sync themselves
	lastHdr atomic.Pointer[[48]byte] // the header seen at the last generation read

	hints refreshHints // recently issued refresh tokens (store_tokens.go)

	touchMu sync.Mutex
	ccGrant map[string]int64   // client id → the grant its client_credentials tokens hang off (guarded by touchMu)
	touched map[touchKey]int64 // consents.last_used as last written by this process

	stmtMu sync.RWMutex
	stmts  map[stmtKey]*sql.Stmt // prepared once per pool, reused on every connection
}

// stmtKey names a prepared statement: which pool, which SQL.
type stmtKey struct {
	db *sql.DB
	q  string
}

// stmt returns the prepared statement for q on the read pool.
func (st *store) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	return st.stmtOn(ctx, st.db, q)
}

// stmtOn returns the prepared statement for q on db, preparing it on first use: SQLite spends
// more time parsing a query than running the point lookups oauthd makes.
func (st *store) stmtOn(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	k := stmtKey{db, q}
	st.stmtMu.RLock()
	s, ok := st.stmts[k]
	st.stmtMu.RUnlock()
	if ok {
		return s, nil
	}
	st.stmtMu.Lock()
	defer st.stmtMu.Unlock()
	if s, ok := st.stmts[k]; ok {
		return s, nil
	}
	s, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if st.stmts == nil {
		st.stmts = map[stmtKey]*sql.Stmt{}
	}
	st.stmts[k] = s
	return s, nil
}

// errRow is a *sql.Row-like value for a statement that failed to prepare.
type rowScanner interface{ Scan(...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// queryRow, exec and query run a cached prepared statement on the pool.
func (st *store) queryRow(ctx context.Context, q string, args ...any) rowScanner {
	ctx = context.WithoutCancel(ctx)
	s, err := st.stmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	return s.QueryRowContext(ctx, args...)
}

// exec runs a writing statement as its own job of the group-committing writer: every write
// goes through the one write connection, so our connections never race each other for the
// lock (an autocommit write on a pool connection can fail with SQLITE_BUSY at once).
func (st *store) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = st.txExec(ctx, tx, q, args...)
		return err
	})
	return res, err
}

func (st *store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	ctx = context.WithoutCancel(ctx)
	s, err := st.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// txRow and txExec run a cached prepared statement inside tx.
// Transactions run on the write connection (st.tx), so their statements are prepared there.
//
// Statements run without the request's cancellation (here and in queryRow and query): a
// cancellable context costs a watcher goroutine per statement in database/sql and in the
// driver, and an interrupt arriving inside the writer would abort a statement of a batch
// that other requests share. Every statement is a short point lookup or write; jobs whose
// request has gone are skipped before they start (writer.run).
func (st *store) txRow(ctx context.Context, tx *sql.Tx, q string, args ...any) rowScanner {
	ctx = context.WithoutCancel(ctx)
	s, err := st.stmtOn(ctx, st.wdb, q)
	if err != nil {
		return errRow{err}
	}
	return tx.StmtContext(ctx, s).QueryRowContext(ctx, args...)
}

func (st *store) txExec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	ctx = context.WithoutCancel(ctx)
	s, err := st.stmtOn(ctx, st.wdb, q)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, s).ExecContext(ctx, args...)
}

// migrations are the schema steps; step i brings the database to user_version i+1. Append only:
// a released step is never edited.
var migrations = []string{
	// 1: the core appliance.
	`
CREATE TABLE settings (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
CREATE TABLE users (
	id            INTEGER PRIMARY KEY,
	sub           TEXT NOT NULL UNIQUE,          -- stable random subject identifier (uuid)
	username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
	password_hash TEXT NOT NULL,                 -- pbkdf2-sha256$iterations$salt$key
	admin         INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL
);
CREATE TABLE clients (
	id            TEXT PRIMARY KEY,
	secret_hash   BLOB,                          -- SHA-256 of the secret; NULL for public clients
	name          TEXT NOT NULL,
	description   TEXT NOT NULL DEFAULT '',
	redirect_uris TEXT NOT NULL,                 -- JSON array of exact URIs
	scopes        TEXT NOT NULL DEFAULT '',      -- space-separated allowed scopes
	public        INTEGER NOT NULL,
	created_at    INTEGER NOT NULL
);
CREATE TABLE sessions (
	hash       BLOB PRIMARY KEY,                 -- SHA-256 of the cookie value
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	auth_time  INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE consents (
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	client_id  TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	scope      TEXT NOT NULL,                    -- every scope the user approved for the client
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, client_id)
);
CREATE TABLE pending (
	hash         BLOB PRIMARY KEY,               -- SHA-256 of the consent form's request token
	session_hash BLOB NOT NULL REFERENCES sessions(hash) ON DELETE CASCADE,
	request      TEXT NOT NULL,                  -- the validated authorization request (JSON)
	expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE grants (
	id         INTEGER PRIMARY KEY,
	client_id  TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE, -- NULL for client_credentials
	scope      TEXT NOT NULL,
	auth_time  INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE INDEX grants_client ON grants(client_id);
CREATE INDEX grants_user ON grants(user_id);
CREATE TABLE codes (
	hash           BLOB PRIMARY KEY,             -- SHA-256 of the code
	client_id      TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	redirect_uri   TEXT NOT NULL,                -- the URI the code was sent to
	redirect_given INTEGER NOT NULL,             -- 1 when the request named redirect_uri
	scope          TEXT NOT NULL,
	code_challenge TEXT NOT NULL DEFAULT '',     -- PKCE S256 challenge, '' when none
	nonce          TEXT NOT NULL DEFAULT '',
	auth_time      INTEGER NOT NULL,
	expires_at     INTEGER NOT NULL,
	used_at        INTEGER,                      -- set by the one successful exchange
	grant_id       INTEGER REFERENCES grants(id) ON DELETE SET NULL
) WITHOUT ROWID;
CREATE TABLE tokens (
	hash           BLOB PRIMARY KEY,             -- SHA-256 of the token
	kind           INTEGER NOT NULL,             -- 1 access token, 2 refresh token
	grant_id       INTEGER NOT NULL REFERENCES grants(id) ON DELETE CASCADE,
	scope          TEXT NOT NULL,
	created_at     INTEGER NOT NULL,
	expires_at     INTEGER NOT NULL,
	rotated_at     INTEGER,                      -- refresh tokens: when it was exchanged
	successor_hash BLOB,                         -- refresh tokens: hash of the refresh token it was exchanged for
	successor_blob BLOB                          -- the successor response, sealed with a key only the old token derives
) WITHOUT ROWID;
CREATE INDEX tokens_grant ON tokens(grant_id);
CREATE INDEX tokens_expires ON tokens(expires_at);
`,
	// 2: OpenID Connect: profiles, per-client ID token settings, signing keys.
	`
ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN id_token_alg TEXT NOT NULL DEFAULT 'RS256';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN always_refresh INTEGER NOT NULL DEFAULT 0;
CREATE TABLE keys (
	kid         TEXT PRIMARY KEY,                -- RFC 7638 thumbprint of the public key
	alg         TEXT NOT NULL,                   -- RS256 or ES256
	private_key BLOB,                            -- PKCS #8 DER; dropped when the key is retired
	public_jwk  TEXT NOT NULL,                   -- what /oauth/jwks publishes
	created_at  INTEGER NOT NULL,
	retired_at  INTEGER                          -- NULL for the current key of its alg
);
`,
	// 3: client pages, dynamic registration, machine grants, administration.
	`
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL; -- who registered it on the pages
ALTER TABLE clients ADD COLUMN logo_uri TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN client_uri TEXT NOT NULL DEFAULT '';   -- homepage
ALTER TABLE clients ADD COLUMN dynamic INTEGER NOT NULL DEFAULT 0;    -- registered by the app itself (RFC 7591)
ALTER TABLE clients ADD COLUMN grant_types TEXT NOT NULL DEFAULT 'authorization_code refresh_token';
ALTER TABLE clients ADD COLUMN registration_hash BLOB;                -- SHA-256 of the RFC 7592 registration access token
ALTER TABLE consents ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
CREATE TABLE registration_tokens (
	hash       BLOB PRIMARY KEY,                 -- SHA-256 of an RFC 7591 initial access token
	uses_left  INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE user_links (
	hash       BLOB PRIMARY KEY,                 -- SHA-256 of a one-time invitation or password reset token
	kind       TEXT NOT NULL,                    -- invite or reset
	user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
	admin      INTEGER NOT NULL DEFAULT 0,       -- an invitation to become an admin
	expires_at INTEGER NOT NULL
);
CREATE TABLE device_codes (
	hash           BLOB PRIMARY KEY,             -- SHA-256 of the device_code
	user_code_hash BLOB NOT NULL UNIQUE,         -- SHA-256 of the normalized user_code
	client_id      TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	scope          TEXT NOT NULL,
	status         INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 approved, 2 denied
	user_id        INTEGER REFERENCES users(id) ON DELETE CASCADE,
	auth_time      INTEGER NOT NULL DEFAULT 0,
	poll_interval  INTEGER NOT NULL,
	last_poll      INTEGER NOT NULL DEFAULT 0,
	expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 4: a change counter for caches: every change to users, clients or keys, by any process,
	// moves it (cache.go).
	`
CREATE TABLE generation (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	n  INTEGER NOT NULL
);
INSERT INTO generation(id, n) VALUES(1, 0);
CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER users_upd AFTER UPDATE ON users BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER users_del AFTER DELETE ON users BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER clients_ins AFTER INSERT ON clients BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER clients_upd AFTER UPDATE ON clients BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER clients_del AFTER DELETE ON clients BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER keys_ins AFTER INSERT ON keys BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER keys_upd AFTER UPDATE ON keys BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER keys_del AFTER DELETE ON keys BEGIN UPDATE generation SET n = n + 1; END;
`,
	// 5: security fixes: what an initial access token lets a registration have, and the limit a
	// dynamically registered client keeps for its RFC 7592 updates.
	`
ALTER TABLE registration_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';      -- scopes it opens, space-separated
ALTER TABLE registration_tokens ADD COLUMN grant_types TEXT NOT NULL DEFAULT ''; -- grants it opens (client_credentials)
ALTER TABLE clients ADD COLUMN reg_scopes TEXT NOT NULL DEFAULT '';              -- RFC 7591 clients: scopes their token opened
ALTER TABLE clients ADD COLUMN reg_grants TEXT NOT NULL DEFAULT '';              -- RFC 7591 clients: grants their token opened
ALTER TABLE clients ADD COLUMN vetted INTEGER NOT NULL DEFAULT 0;                -- created by an administrator (CLI or admin on the pages)
ALTER TABLE user_links ADD COLUMN email TEXT NOT NULL DEFAULT '';                -- verify: the address it verifies
UPDATE clients SET vetted = 1 WHERE dynamic = 0 AND (owner_id IS NULL OR owner_id IN (SELECT id FROM users WHERE admin = 1));
ALTER TABLE sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;            -- when it started (the account page lists sessions)
ALTER TABLE sessions ADD COLUMN ip TEXT NOT NULL DEFAULT '';                     -- the address it started from
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';             -- the browser it started in (at most 300 bytes)
ALTER TABLE tokens ADD COLUMN rotated_ms INTEGER;                                -- refresh tokens: when it was exchanged, unix milliseconds (-refresh-grace to the millisecond)
`,
	// 6: groups, per-app access and custom claims (issue 12). Every change to these tables
	// moves the generation counter, so that a CLI change reaches the server's caches.
	`
CREATE TABLE groups (
	id          INTEGER PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE COLLATE NOCASE, -- 1-64 of [A-Za-z0-9._-]
	description TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL
);
CREATE TABLE group_members (
	group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
	user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX group_members_user ON group_members(user_id, group_id);
CREATE TABLE client_groups (                       -- a client's allow-list; none: every user
	client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	group_id  INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
	PRIMARY KEY (client_id, group_id)
) WITHOUT ROWID;
CREATE INDEX client_groups_group ON client_groups(group_id);
CREATE TABLE user_claims (
	user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	name    TEXT NOT NULL,
	value   TEXT NOT NULL,                         -- compact JSON, at most 1 KiB
	PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
CREATE TABLE group_claims (
	group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
	name     TEXT NOT NULL,
	value    TEXT NOT NULL,                        -- compact JSON, at most 1 KiB
	PRIMARY KEY (group_id, name)
) WITHOUT ROWID;
CREATE TRIGGER groups_ins AFTER INSERT ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER groups_upd AFTER UPDATE ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER groups_del AFTER DELETE ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER group_members_ins AFTER INSERT ON group_members BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER group_members_del AFTER DELETE ON group_members BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER client_groups_ins AFTER INSERT ON client_groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER client_groups_del AFTER DELETE ON client_groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER user_claims_ins AFTER INSERT ON user_claims BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER user_claims_upd AFTER UPDATE ON user_claims BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER user_claims_del AFTER DELETE ON user_claims BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER group_claims_ins AFTER INSERT ON group_claims BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER group_claims_upd AFTER UPDATE ON group_claims BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER group_claims_del AFTER DELETE ON group_claims BEGIN UPDATE generation SET n = n + 1; END;
`,
	// 7: passkeys and second factors: how each session, code and grant was authenticated,
	// per-client MFA, passkeys, TOTP, recovery codes (store_mfa.go).
	migrationMFA,
	// 8: the activity log (activity.go).
	migrationEvents,
	// 9: resource servers and MCP (resources.go): registered resources with their
	// introspection credential, the RFC 8707 resource indicators of every request, grant and
	// access token, the resources a user approved for a client, and the OpenID Registration
	// application_type of dynamically registered clients.
	`
CREATE TABLE resources (
	id         INTEGER PRIMARY KEY AUTOINCREMENT, -- what tokens store (never reused: a new resource never inherits old tokens)
	uri        TEXT NOT NULL UNIQUE,             -- the resource indicator, canonical (RFC 8707 §2)
	name       TEXT NOT NULL,                    -- shown on the consent page
	scopes     TEXT NOT NULL DEFAULT '',         -- space-separated scopes requestable with this resource
	jwt        INTEGER NOT NULL DEFAULT 0,       -- its access tokens are RFC 9068 JWTs
	token_ttl  INTEGER NOT NULL DEFAULT 0,       -- its access token lifetime in seconds; 0: the server's -token-ttl
	client_id  TEXT NOT NULL UNIQUE REFERENCES clients(id) ON DELETE CASCADE, -- its introspection credential
	created_at INTEGER NOT NULL
);
ALTER TABLE codes ADD COLUMN resource TEXT NOT NULL DEFAULT '';        -- space-separated resources of the request
ALTER TABLE device_codes ADD COLUMN resource TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN resource TEXT NOT NULL DEFAULT '';       -- space-separated resources the grant is for
ALTER TABLE tokens ADD COLUMN resource INTEGER NOT NULL DEFAULT 0;     -- access tokens: resources.id of the one it is for; 0 none
ALTER TABLE consents ADD COLUMN resources TEXT NOT NULL DEFAULT '';    -- space-separated resources the user approved
ALTER TABLE clients ADD COLUMN application_type TEXT NOT NULL DEFAULT 'web'; -- web or native (OpenID Registration §2)
CREATE TRIGGER resources_ins AFTER INSERT ON resources BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER resources_upd AFTER UPDATE ON resources BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER resources_del AFTER DELETE ON resources BEGIN UPDATE generation SET n = n + 1; END;
`,
	// 10: forward auth: protected apps' origins, their one-time codes and app sessions
	// (store_forwardauth.go).
	migrationForwardAuth,
}

// dsn builds the modernc DSN with every pragma in it, so that each pooled connection gets them.
// synchronous(full): a commit is on disk before it returns. The server's write connection
// uses writerDSN instead. temp_store(memory): the savepoints of group commit keep their
// sub-journals in memory, not in temporary files.
func dsn(path string) string { return dsnSync(path, "full") }

// writerDSN is the DSN of the server's write connection: synchronous(normal), because the
// writer fsyncs the WAL itself before it acknowledges anything (see writer.go). openStore
// adds wal_autocheckpoint(0) when the checkpointer runs (checkpoint.go).
func writerDSN(path string) string { return dsnSync(path, "normal") }

func dsnSync(path, sync string) string {
	return "file:" + escapePath(path) + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(" + sync + ")&_pragma=temp_store(memory)&_txlock=immediate"
}

// escapePath escapes the characters a file: URI gives a meaning to.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// createDB creates the database file when there is none: readable by this account alone
// (SQLite gives its -wal and -shm files the same mode), with 2 KiB pages, in WAL mode. The
// page size must be set before anything else: the driver applies a DSN's pragmas in
// alphabetical order, journal_mode before page_size, and switching to WAL writes the first
// page, which fixes the page size (so page_size in the DSN never took effect).
func createDB(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	f.Close()
	db, err := sql.Open("sqlite", "file:"+escapePath(path))
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range []string{"PRAGMA page_size = 2048", "PRAGMA journal_mode = wal"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// openStore opens (creating if needed) the database at path and brings its schema up to date.
// A database written by a newer oauthd is refused rather than misread.
func openStore(ctx context.Context, path string) (*store, error) {
	if path == "" {
		return nil, errors.New("database path is empty")
	}
	if err := createDB(ctx, path); err != nil {
		return nil, fmt.Errorf("create database %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	st := &store{db: db, wdb: db, cache: newCache(), touched: map[touchKey]int64{}, ccGrant: map[string]int64{}}
	if err := st.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	// One write connection: every transaction goes through it, batched (group commit). It
	// commits with synchronous=NORMAL and the writer fsyncs the WAL itself; should the WAL
	// file not be reachable, commits sync themselves (FULL).
	wal, werr := openWALSync(path)
	wdsn := writerDSN(path)
	if werr != nil {
		wal, wdsn = nil, dsn(path)
	}
	// Checkpoints run beside the writer (checkpoint.go), which needs the WAL-index to see how
	// long the WAL is; without it, SQLite checkpoints inside COMMIT as it does by default.
	// (The -shm file exists: the read pool has a connection open since init.)
	hdr := mapWALHeader(path)
	var ckpt *checkpointer
	if hdr != nil {
		if ckpt, err = newCheckpointer(path, hdr); err == nil {
			wdsn += "&_pragma=wal_autocheckpoint(0)"
		}
	}
	wdb, err := sql.Open("sqlite", wdsn)
	if err != nil {
		if ckpt != nil {
			ckpt.close()
		}
		if hdr != nil {
			hdr.close()
		}
		wal.close()
		db.Close()
		return nil, err
	}
	// Only the writer goroutine begins transactions here, one at a time; the second connection
	// lets a statement be prepared (database/sql prepares on a free connection) while the
	// writer's transaction holds the first.
	wdb.SetMaxOpenConns(2)
	wdb.SetMaxIdleConns(2)
	wdb.SetConnMaxLifetime(0)
	st.wdb, st.path, st.wal, st.walHdr = wdb, path, wal, hdr
	var keeper walKeeper
	if ckpt != nil {
		st.ckpt, keeper = ckpt, ckpt
	}
	st.w = newWriter(wdb, wal, func(tx *sql.Tx, q string) error {
		_, err := st.txExec(context.Background(), tx, q)
		return err
	}, &freshWatch{st: st}, keeper)
	return st, nil
}

// reportTo makes the store log what goes wrong in its background work (checkpoints) to log.
func (st *store) reportTo(log *slog.Logger) {
	if st.ckpt != nil {
		st.ckpt.log.Store(log)
	}
}

// init checks the journal mode and runs the pending migrations, each in its own transaction.
func (st *store) init(ctx context.Context) error {
	var mode string
	if err := st.queryRow(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	for {
		done, err := st.migrateOne(ctx)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the next migration step, re-reading user_version inside the write
// transaction so that two processes opening a new file at once do not both apply it.
func (st *store) migrateOne(ctx context.Context) (done bool, err error) {
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, err
	}
	if v > len(migrations) {
		return false, fmt.Errorf("schema version %d is newer than this oauthd knows (%d): run a newer oauthd", v, len(migrations))
	}
	if v == len(migrations) {
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return false, fmt.Errorf("migration %d: %w", v+1, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, err
	}
	return false, tx.Commit()
}

// Close closes the database; SQLite checkpoints the WAL when the last connection goes.
func (st *store) Close() error {
	if st.w != nil {
		st.w.close()
		st.w = nil
	}
	if st.ckpt != nil { // after the writer, which runs passes on its connection too
		st.ckpt.close()
		st.ckpt = nil
	}
	st.stmtMu.Lock()
	for _, s := range st.stmts {
		s.Close()
	}
	st.stmts = nil
	st.stmtMu.Unlock()
	if st.wdb != st.db {
		st.wdb.Close()
	}
	st.wal.close()
	st.wal = nil
	if st.walHdr != nil {
		st.walHdr.close()
		st.walHdr = nil
	}
	return st.db.Close()
}

// tx runs fn in one write transaction (BEGIN IMMEDIATE through _txlock), committing when fn
// returns nil. fn may return a sentinel together with a wish to commit: see commitErr.
//
// With the writer running, fn joins the next group commit instead.
func (st *store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return st.txJob(ctx, fn, false)
}

// txOne is tx for a job of at most one statement: if fn fails, it must have written nothing
// (its statement failed, or fn refused before or without writing). The writer runs such jobs
// without a savepoint of their own.
func (st *store) txOne(ctx context.Context, fn func(*sql.Tx) error) error {
	return st.txJob(ctx, fn, true)
}

func (st *store) txJob(ctx context.Context, fn func(*sql.Tx) error, one bool) error {
	if st.w != nil {
		err := st.w.do(ctx, fn, one)
		var ce commitErr
		if errors.As(err, &ce) {
			return ce.err
		}
		return err
	}
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	err = fn(tx)
	var ce commitErr
	if errors.As(err, &ce) {
		if cerr := tx.Commit(); cerr != nil {
			return cerr
		}
		return ce.err
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}

// commitErr asks tx to commit what was written and then report err: a replayed code or
// refresh token revokes its grant and still fails the request.
type commitErr struct{ err error }

func (c commitErr) Error() string { return c.err.Error() }
func (c commitErr) Unwrap() error { return c.err }

// secretSetting returns the named 32-byte random value, creating it on first use.
func (st *store) secretSetting(ctx context.Context, name string) ([]byte, error) {
	v := make([]byte, 32)
	rand.Read(v)
	if _, err := st.exec(ctx, "INSERT OR IGNORE INTO settings(name, value) VALUES(?, ?)", name, v); err != nil {
		return nil, err
	}
	err := st.queryRow(ctx, "SELECT value FROM settings WHERE name = ?", name).Scan(&v)
	return v, err
}

// ---- users

// user is a resource owner.
type user struct {
	ID            int64
	Sub           string // stable random subject identifier
	Username      string
	PasswordHash  string
	Admin         bool
	CreatedAt     int64
	Name          string // OIDC "name"
	Email         string
	EmailVerified bool
	UpdatedAt     int64 // when the profile last changed (OIDC "updated_at")
	Disabled      bool  // cannot sign in; has no sessions or tokens
}

// userCols lists the users columns in scanUser's order; userColsU is the same with "u.".
const userCols = "id, sub, username, password_hash, admin, created_at, name, email, email_verified, updated_at, disabled"

// userColsU reads the same columns through an outer join on users u: a client_credentials
// grant has no user, and its user reads as the zero user.
var userColsU = "coalesce(u.id, 0), coalesce(u.sub, ''), coalesce(u.username, ''), coalesce(u.password_hash, ''), coalesce(u.admin, 0), " +
	"coalesce(u.created_at, 0), coalesce(u.name, ''), coalesce(u.email, ''), coalesce(u.email_verified, 0), coalesce(u.updated_at, 0), coalesce(u.disabled, 0)"

// userDest is the scan destination list of a user, in userCols order.
func (u *user) dest() []any {
	return []any{&u.ID, &u.Sub, &u.Username, &u.PasswordHash, &u.Admin, &u.CreatedAt, &u.Name, &u.Email, &u.EmailVerified, &u.UpdatedAt, &u.Disabled}
}

func scanUser(row interface{ Scan(...any) error }) (user, error) {
	var u user
	err := row.Scan(u.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return u, err
}

// createUser adds a user; errExists when the name is taken (case-insensitively).
func (st *store) createUser(ctx context.Context, u user) error {
	return mapConstraint(st.tx(ctx, func(tx *sql.Tx) error { return insertUser(ctx, tx, u) }))
}

// insertUser writes a new user row.
func insertUser(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, u user) error {
	_, err := db.ExecContext(ctx, "INSERT INTO users(sub, username, password_hash, admin, created_at, name, email, email_verified, updated_at, disabled) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		u.Sub, u.Username, u.PasswordHash, u.Admin, u.CreatedAt, u.Name, u.Email, u.EmailVerified, u.CreatedAt, u.Disabled)
	return err
}

// createFirstUser adds u only while the database has no user at all: the one-time setup.
func (st *store) createFirstUser(ctx context.Context, u user) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := st.txRow(ctx, tx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errExists
		}
		return insertUser(ctx, tx, u)
	})
}

func mapConstraint(err error) error {
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return errExists
	}
	return err
}

func (st *store) userByName(ctx context.Context, name string) (user, error) {
	return scanUser(st.queryRow(ctx, "SELECT "+userCols+" FROM users WHERE username = ?", name))
}

func (st *store) userByID(ctx context.Context, id int64) (user, error) {
	return scanUser(st.queryRow(ctx, "SELECT "+userCols+" FROM users WHERE id = ?", id))
}

// setProfile changes a user's name and email; a changed email is no longer verified.
func (st *store) setProfile(ctx context.Context, id int64, name, email string, now int64) error {
	return affected(st.exec(ctx, "UPDATE users SET name = ?, email_verified = (email_verified AND email = ?), email = ?, updated_at = ? WHERE id = ?",
		name, email, email, now, id))
}

func (st *store) countUsers(ctx context.Context) (n int, err error) {
	err = st.queryRow(ctx, "SELECT count(*) FROM users").Scan(&n)
	return n, err
}

func (st *store) listUsers(ctx context.Context) ([]user, error) {
	rows, err := st.query(ctx, "SELECT "+userCols+" FROM users ORDER BY username")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []user
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// deleteUser removes a user with their sessions, consents, grants, codes and tokens.
func (st *store) deleteUser(ctx context.Context, name string) error {
	defer st.cache.flush()
	return affected(st.exec(ctx, "DELETE FROM users WHERE username = ?", name))
}

// setPassword replaces a password hash (`oauthd user passwd`) and, in the same transaction,
// ends everything a reset link ends (resetAccess): sessions, grants with their tokens, codes,
// device approvals, remembered consents, other reset links. A server running on the same
// file sees it at its next request (the generation counter moves).
func (st *store) setPassword(ctx context.Context, name, hash string) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := st.txRow(ctx, tx, "UPDATE users SET password_hash = ? WHERE username = ? RETURNING id", hash, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		return st.endAccess(ctx, tx, id, resetAccess)
	})
}

func affected(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errNotFound
	}
	return nil
}

// ---- sessions, consents, pending consent requests

// session is a logged-in browser.
type session struct {
	Hash     []byte
	User     user
	AuthTime int64  // when the sign-in's last (strongest) step was done
	AMR      string // RFC 8176 methods of the sign-in, space-separated ("pwd", "pwd otp mfa", …)
}

// createSession starts a session for u, whose password was just checked against
// u.PasswordHash. The row is written only while that is still the user's password and the
// user is not disabled (errNotFound otherwise): a sign-in that checked the old password
// while a reset (or a disabling) committed must not come out of it with a session.
func (st *store) createSession(ctx context.Context, hash []byte, u user, authTime, expires int64, ip, ua string) error {
	if len(ua) > 300 {
		ua = ua[:300]
	}
	return affected(st.exec(ctx, "INSERT INTO sessions(hash, user_id, auth_time, expires_at, created_at, ip, user_agent) SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND password_hash = ? AND disabled = 0",
		hash, authTime, expires, authTime, ip, ua, u.ID, u.PasswordHash))
}

// errSessionEnded: the session a decision was made in ended before it was recorded (sign-out,
// password reset, disabled user, expiry).
var errSessionEnded = errors.New("the session ended")

// liveSession checks inside tx that the session with that cookie hash still exists for the
// user (not expired, user not disabled), so that what a page decided in it is recorded only
// if nothing ended it meanwhile: a password reset between the session check and the write
// must win.
func (st *store) liveSession(ctx context.Context, tx *sql.Tx, sessionHash []byte, userID, now int64) error {
	var n int
	err := st.txRow(ctx, tx, "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ? AND s.user_id = ? AND s.expires_at > ? AND u.disabled = 0",
		sessionHash, userID, now).Scan(&n)
	if err == nil && n == 0 {
		err = errSessionEnded
	}
	return err
}

// sessionByHash returns the live session with that cookie hash, with its user.
func (st *store) sessionByHash(ctx context.Context, hash []byte, now int64) (session, error) {
	row := st.queryRow(ctx, "SELECT s.auth_time, s.amr, "+userColsU+
		" FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ? AND s.expires_at > ? AND u.disabled = 0", hash, now)
	s := session{Hash: hash}
	err := row.Scan(append([]any{&s.AuthTime, &s.AMR}, s.User.dest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return s, err
}

func (st *store) deleteSession(ctx context.Context, hash []byte) error {
	_, err := st.exec(ctx, "DELETE FROM sessions WHERE hash = ?", hash)
	return err
}

// consentScopes returns every scope the user has approved for the client.
func (st *store) consentScopes(ctx context.Context, userID int64, clientID string) ([]string, error) {
	var s string
	err := st.queryRow(ctx, "SELECT scope FROM consents WHERE user_id = ? AND client_id = ?", userID, clientID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound
	}
	return strings.Fields(s), err
}

// addConsent remembers that the user approved scopes for the client (joined to earlier approvals).
func (st *store) addConsent(ctx context.Context, tx *sql.Tx, userID int64, clientID string, scopes []string, now int64) error {
	var old string
	err := st.txRow(ctx, tx, "SELECT scope FROM consents WHERE user_id = ? AND client_id = ?", userID, clientID).Scan(&old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	all := strings.Join(normScopes(append(strings.Fields(old), scopes...)), " ")
	_, err = st.txExec(ctx, tx, "INSERT INTO consents(user_id, client_id, scope, created_at, updated_at) VALUES(?, ?, ?, ?, ?) "+
		"ON CONFLICT(user_id, client_id) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
		userID, clientID, all, now, now)
	return err
}

func (st *store) createPending(ctx context.Context, hash, sessionHash []byte, req authRequest, expires int64) error {
	b, _ := json.Marshal(req)
	_, err := st.exec(ctx, "INSERT INTO pending(hash, session_hash, request, expires_at) VALUES(?, ?, ?, ?)",
		hash, sessionHash, string(b), expires)
	return err
}

// takePending consumes the pending consent request bound to this session: a replayed or
// forged form finds nothing.
func (st *store) takePending(ctx context.Context, hash, sessionHash []byte, now int64) (authRequest, error) {
	var req authRequest
	var b string
	err := st.tx(ctx, func(tx *sql.Tx) error {
		return st.txRow(ctx, tx, "DELETE FROM pending WHERE hash = ? AND session_hash = ? AND expires_at > ? RETURNING request",
			hash, sessionHash, now).Scan(&b)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return req, errNotFound
	}
	if err != nil {
		return req, err
	}
	return req, json.Unmarshal([]byte(b), &req)
}
