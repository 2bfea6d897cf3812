// Command oauthd is a single-binary OAuth 2 authorization server for small self-hosted
// instances: one command, one SQLite file, embedded pages.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run dispatches a command line; it returns the process exit code (2 for usage errors).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	var err error
	switch {
	case len(args) > 1 && isHelpArg(args[1]) && slices.Contains(commandGroups, args[0]):
		groupHelp(stdout, args[0])
		return 0
	case len(args) > 1 && args[0] == "help":
		return run(ctx, append(args[1:], "-h"), stdin, stdout, stderr, getenv)
	case len(args) > 0 && args[0] == "version":
		fmt.Fprintln(stdout, versionLine())
		return 0
	case len(args) > 0 && args[0] == "user":
		err = runUser(ctx, args[1:], stdin, stdout, stderr, getenv)
	case len(args) > 0 && args[0] == "group":
		err = runGroup(ctx, args[1:], stdout, stderr, getenv)
	case len(args) > 0 && args[0] == "client":
		err = runClient(ctx, args[1:], stdout, stderr, getenv)
	case len(args) > 0 && args[0] == "resource":
		err = runResource(ctx, args[1:], stdout, stderr, getenv)
	case len(args) > 0 && args[0] == "keys":
		err = runKeys(ctx, args[1:], stdout, getenv)
	case len(args) > 0 && args[0] == "registration-token":
		err = runRegistrationToken(ctx, args[1:], stdout, getenv)
	case len(args) > 0 && args[0] == "backup":
		err = runBackup(ctx, args[1:], stdout, getenv)
	case len(args) > 0 && args[0] == "check":
		err = runCheck(ctx, args[1:], stdout, getenv)
	case len(args) > 0 && args[0] == "help":
		args = []string{"-h"}
		fallthrough
	case len(args) == 0 || strings.HasPrefix(args[0], "-"):
		var cfg config
		var log *slog.Logger
		if cfg, log, err = serveConfig(args, stderr, getenv); err == nil {
			ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = serve(ctx, cfg, log, nil)
		}
	default:
		return unknownCommand(stderr, args[0])
	}
	err = helpOrNil(err, stdout)
	var ue usageErr
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "oauthd: %v\nrun 'oauthd help' for usage\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "oauthd: %v\n", err)
		return 1
	}
}

const usage = `oauthd: a single-binary OAuth 2 authorization server.

  oauthd [-addr 127.0.0.1:8080] [-db oauthd.db] [-issuer URL] [-log-level info] ...
                               serve (oauthd -h lists every flag)
  oauthd user add [-db PATH] [-admin] [-name "Full Name"] [-email ADDR] [-group NAME ...] NAME   add a user (password on stdin)
  oauthd user list|del NAME|passwd NAME [-db PATH]
  oauthd user set NAME [-name TEXT] [-email ADDR] [-email-verified=true|false] [-admin=true|false]
  oauthd user claim NAME [KEY=JSON ...] [KEY= ...]   set or remove custom claims
  oauthd group add NAME [-description TEXT] | del NAME | list | members NAME
  oauthd group add-member|remove-member GROUP USER... | claim GROUP [KEY=JSON ...]
                               (user and group commands take their flags before or after their arguments)
  oauthd client add -name NAME -redirect-uri URI [-redirect-uri URI ...] [-public] [-scope "a b"] [-description TEXT]
                    [-post-logout-redirect-uri URI ...] [-id-token-alg RS256|ES256] [-always-refresh] [-allow-group NAME ...] [-require-mfa]
  oauthd client add -name NAME -forward-auth https://app.example.com [-forward-auth ORIGIN ...] [-allow-group NAME ...] [-require-mfa]
                               a protected app behind the proxy's forward auth (no OAuth, no secret)
  oauthd user mfa NAME | mfa-reset NAME [-db PATH]  a user's second factors: list them, or remove them all
  oauthd client list | del ID | rotate-secret ID    (each takes -db PATH)
  oauthd resource add -uri URI -name NAME [-scope "a b"] [-jwt] [-token-ttl D]   register a resource server (an MCP server, an API)
  oauthd resource list | del URI [-db PATH]
  oauthd keys rotate | list [-db PATH]              ID token signing keys
  oauthd registration-token create [-ttl 24h] [-uses 1] [-scope "a b"] [-grant client_credentials] [-db PATH]
                                                    initial access token for RFC 7591 registration
  oauthd backup [-db PATH] FILE                     consistent copy of the database, also while serving
  oauthd check [-client ID -secret SECRET] URL      self-test of a running deployment (a checklist)
  oauthd version                                    the version and VCS revision of this binary
  oauthd help [COMMAND]                             this text, or a command's usage and flags (also COMMAND -h)

Configuration flags can also come from OAUTHD_<FLAG> (e.g. OAUTHD_ADDR, OAUTHD_DB); a flag on
the command line wins.
`

// usageErr is a command-line mistake (exit status 2).
type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usageError(format string, args ...any) error { return usageErr{fmt.Sprintf(format, args...)} }

// parseFlags parses args into fs; configuration flags not given on the command line are then
// taken from OAUTHD_<FLAG> (dashes as underscores), so the command line wins.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string, envFlags ...string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpErr{fs}
		}
		return usageError("%v", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range envFlags {
		key := "OAUTHD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if v := getenv(key); v != "" && !set[name] {
			if err := fs.Set(name, v); err != nil {
				return usageError("%s=%q: %v", key, v, err)
			}
		}
	}
	return nil
}

// serveConfig reads the server's flags (and their OAUTHD_* variables) and builds its logger.
func serveConfig(args []string, stderr io.Writer, getenv func(string) string) (config, *slog.Logger, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("oauthd", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "address to listen on")
	fs.StringVar(&cfg.DB, "db", cfg.DB, "path of the SQLite database")
	fs.StringVar(&cfg.Issuer, "issuer", "", "issuer URL, the exact `iss` everywhere (default http://<addr>)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "access token lifetime (expires_in)")
	fs.DurationVar(&cfg.RefreshTTL, "refresh-ttl", cfg.RefreshTTL, "refresh token lifetime")
	fs.DurationVar(&cfg.RefreshGrace, "refresh-grace", cfg.RefreshGrace, "how long a just-rotated refresh token still returns the same successor (0: a replay always revokes)")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "browser login session lifetime")
	fs.DurationVar(&cfg.PurgeInterval, "purge-interval", cfg.PurgeInterval, "how often expired codes, tokens and sessions are deleted")
	fs.StringVar(&cfg.Registration, "registration", cfg.Registration, "dynamic client registration: off, token (needs an initial access token) or open (public clients, rate-limited)")
	fs.StringVar(&cfg.RegistrationScopes, "registration-scopes", "", "space-separated scopes that dynamically registered clients may have besides the OpenID ones (default none)")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log line format: text or json")
	fs.StringVar(&cfg.TrustedProxy, "trusted-proxy", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client's address")
	fs.BoolVar(&cfg.UserApps, "user-apps", cfg.UserApps, "let signed-in users register their own applications (false: administrators only)")
	fs.StringVar(&cfg.SMTP, "smtp", "", "mail server for invitations, password resets and email verification: smtp://USER@HOST:587 (STARTTLS) or smtps://USER@HOST:465; password in OAUTHD_SMTP_PASSWORD")
	fs.StringVar(&cfg.MailFrom, "mail-from", "", "sender address of the mail oauthd sends (with -smtp)")
	retention := fs.String("event-retention", "30d", "how long the activity page keeps events: days (30d) or a duration")
	fs.StringVar(&cfg.Name, "name", "oauthd", "the instance's name, shown on every page (titles, header, consent) and in mail")
	fs.StringVar(&cfg.Logo, "logo", "", "path of a PNG or SVG logo (at most 256 KiB) shown on every page and as the favicon")
	fs.BoolVar(&cfg.AllowNetFS, "allow-network-fs", false, "serve a database on a network file system (NFS, SMB/CIFS) despite its unreliable locking")
	fs.StringVar(&cfg.MFA, "mfa", cfg.MFA, "second factors: off, optional (asked of users who have one), required (every user) or admins (administrators must have one)")
	fs.BoolVar(&cfg.ClientMetadataDocuments, "client-metadata-documents", cfg.ClientMetadataDocuments, "accept https client_id URLs whose metadata document describes the client (MCP hosts)")
	fs.BoolVar(&cfg.AllowPrivateClientMetadata, "allow-private-client-metadata", false, "fetch client metadata documents from loopback and private addresses too (unsafe: lets anyone make the server reach your internal network)")
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if err := parseFlags(fs, args, getenv, names...); err != nil {
		return cfg, nil, err
	}
	if fs.NArg() > 0 {
		return cfg, nil, usageError("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return cfg, nil, usageError("-log-level %q: want debug, info, warn or error", cfg.LogLevel)
	}
	for name, d := range map[string]time.Duration{"token-ttl": cfg.TokenTTL, "refresh-ttl": cfg.RefreshTTL, "session-ttl": cfg.SessionTTL, "purge-interval": cfg.PurgeInterval} {
		if d < time.Second {
			return cfg, nil, usageError("-%s must be at least 1s", name)
		}
	}
	if !slices.Contains([]string{registrationOff, registrationToken, registrationOpen}, cfg.Registration) {
		return cfg, nil, usageError("-registration %q: want off, token or open", cfg.Registration)
	}
	if !slices.Contains([]string{mfaOff, mfaOptional, mfaRequired, mfaAdmins}, cfg.MFA) {
		return cfg, nil, usageError("-mfa %q: want off, optional, required or admins", cfg.MFA)
	}
	if cfg.RefreshGrace < 0 {
		return cfg, nil, usageError("-refresh-grace must not be negative")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "http://" + cfg.Addr
	}
	iss, err := normalizeIssuer(cfg.Issuer)
	if err != nil {
		return cfg, nil, usageError("-issuer: %v", err)
	}
	cfg.Issuer = iss
	if cfg.EventRetention, err = parseRetention(*retention); err != nil {
		return cfg, nil, usageError("-event-retention %v", err)
	}
	if cfg.SMTP != "" {
		cfg.SMTPPassword = getenv("OAUTHD_SMTP_PASSWORD")
		if _, err := parseMailer(cfg.SMTP, cfg.SMTPPassword, cfg.MailFrom); err != nil {
			return cfg, nil, usageError("-smtp: %v", err)
		}
	} else if cfg.MailFrom != "" {
		return cfg, nil, usageError("-mail-from needs -smtp")
	}
	if _, err := parseProxies(cfg.TrustedProxy); err != nil {
		return cfg, nil, usageError("-trusted-proxy: %v", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "text":
		return cfg, slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return cfg, slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return cfg, nil, usageError("-log-format %q: want text or json", cfg.LogFormat)
}

// serve runs the server until ctx ends, then shuts down gracefully: in-flight requests finish
// and the database is closed. ln may be nil (listen on cfg.Addr).
func serve(ctx context.Context, cfg config, log *slog.Logger, ln net.Listener) error {
	// ctx ends the server; startup itself runs to completion, so that a signal arriving
	// during it still means a clean stop rather than a failed start.
	start := context.WithoutCancel(ctx)
	if err := checkFS(cfg, cfg.DB); err != nil {
		return err
	}
	st, err := openStore(start, cfg.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	st.reportTo(log)
	s, err := newServer(start, cfg, st, log)
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return err
		}
	}
	srv := newHTTPServer(s.routes(), log, defaultLimits)
	log.Info("oauthd listening", "issuer", s.cfg.Issuer, "addr", ln.Addr().String(), "db", cfg.DB)
	for _, w := range append(configWarnings(s.cfg, ln.Addr().String()), fileModeWarnings(cfg.DB)...) {
		log.Warn(w)
	}
	if n, err := st.countUsers(start); err != nil {
		return err
	} else if n == 0 {
		// The one-time URL carries a token: it goes to a file only this account can read,
		// never into the log.
		file := setupURLFile(cfg.DB)
		if err := writePrivate(file, s.cfg.Issuer+"/setup?token="+s.newSetupToken()+"\n"); err != nil {
			log.Warn("no users yet, and the one-time setup URL could not be written; create the first (admin) account with 'oauthd user add -admin NAME'", "cause", err)
		} else {
			log.Warn("no users yet: open the one-time URL stored in setup_url_file (readable only by this account) to create the first (admin) account, or use 'oauthd user add -admin NAME'",
				"setup_url_file", file)
		}
	} else {
		os.Remove(setupURLFile(cfg.DB))
	}
	purgeDone := make(chan struct{})
	go func() {
		defer close(purgeDone)
		s.purgeLoop(ctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		<-purgeDone
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-purgeDone
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// setupURLFile is where the first-run setup URL is written, next to the database.
func setupURLFile(db string) string { return db + "-setup-url" }

// writePrivate writes content to a file readable and writable only by this account. It writes
// a new file (os.CreateTemp: 0600, O_EXCL) beside path and renames it over path, never writing
// into a file that exists already: another account that created path beforehand, or keeps it
// open, or put a symbolic link there, would otherwise read what is written (the setup URL
// carries a token that creates the first administrator).
func writePrivate(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// httpLimits bound what one connection may take: a client that sends its headers or body
// slowly (slow loris), or holds an idle connection, is cut off.
type httpLimits struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}

var defaultLimits = httpLimits{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second,
	Idle: 120 * time.Second, MaxHeaderBytes: 64 << 10}

// newHTTPServer is the server's http.Server: every timeout set, headers bounded (bodies are
// bounded per route with http.MaxBytesHandler).
func newHTTPServer(h http.Handler, log *slog.Logger, l httpLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// purgeLoop deletes expired rows every PurgeInterval until ctx ends.
func (s *server) purgeLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.store.purge(ctx, s.now(), s.cfg.RefreshGrace)
			if err == nil {
				err = s.store.purgeEvents(ctx, s.now().Add(-s.cfg.EventRetention).Unix())
			}
			if err == nil {
				err = s.store.deleteRetiredKeys(ctx, s.keyCutoff())
			}
			if err != nil && ctx.Err() == nil {
				s.log.Error("purging expired rows failed", "cause", err)
			} else if n > 0 {
				s.log.Debug("purged expired rows", "rows", n)
			}
		}
	}
}

// subcommandFlags starts a subcommand's flag set with -db (also OAUTHD_DB).
func subcommandFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	db := fs.String("db", defaultConfig().DB, "path of the SQLite database")
	return fs, db
}

// printJSON writes one JSON object on its own line.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// runUser is `oauthd user add|list|del|passwd`, and dispatches `user set|claim` (groups_cli.go).
func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usageError("user: want add, list, del, passwd, set, claim, mfa or mfa-reset")
	}
	switch args[0] {
	case "set":
		return runUserSet(ctx, args[1:], stdout, stderr, getenv)
	case "claim":
		return runUserClaim(ctx, args[1:], stdout, getenv)
	}
	fs, db := subcommandFlags("user " + args[0])
	admin := false
	var fullName, email string
	var groups groupFlag
	if args[0] == "add" {
		fs.BoolVar(&admin, "admin", false, "make the user an administrator")
		fs.StringVar(&fullName, "name", "", "the user's full name (OIDC name claim)")
		fs.StringVar(&email, "email", "", "the user's email address, taken as verified (set by the administrator)")
		fs.Var(&groups, "group", "a group the user belongs to (repeat for several)")
	}
	pos, err := parseArgs(fs, args[1:], getenv, "db")
	if err != nil {
		return err
	}
	nargs := map[string]int{"add": 1, "list": 0, "del": 1, "passwd": 1, "mfa": 1, "mfa-reset": 1}
	want, ok := nargs[args[0]]
	if !ok {
		return usageError("user: unknown command %q (want add, list, del, passwd, set, claim, mfa or mfa-reset)", args[0])
	}
	if len(pos) != want {
		return usageError("user %s takes %d argument(s), got %d", args[0], want, len(pos))
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	var name string
	if len(pos) > 0 {
		name = pos[0]
	}
	switch args[0] {
	case "add":
		pw, err := readPassword(stdin, stderr)
		if err != nil {
			return err
		}
		if err := validProfile(fullName, email); err != nil {
			return usageError("user add: %v", err)
		}
		u, err := newUser(name, pw, admin, defaultPBKDF2Iter, time.Now())
		if err != nil {
			return err
		}
		u.Name, u.Email, u.EmailVerified = fullName, email, email != ""
		if n, err := st.countUsers(ctx); err != nil {
			return err
		} else if n == 0 {
			u.Admin = true // the first user administers the server
		}
		if err := st.createUserInGroups(ctx, u, groups); errors.Is(err, errExists) {
			return fmt.Errorf("user %q already exists (change it with `oauthd user set`)", name)
		} else if err != nil {
			return unknownGroups(err)
		}
		if u, err = st.userByName(ctx, name); err != nil {
			return err
		}
		return st.printUser(ctx, stdout, u)
	case "list":
		us, err := st.listUsers(ctx)
		if err != nil {
			return err
		}
		groups, err := st.groupsByUser(ctx)
		if err != nil {
			return err
		}
		for _, u := range us {
			j := userJSON(u)
			j["groups"] = append([]string{}, groups[u.ID]...)
			if err := printJSON(stdout, j); err != nil {
				return err
			}
		}
		return nil
	case "del":
		if err := st.deleteUser(ctx, name); errors.Is(err, errNotFound) {
			return fmt.Errorf("no user %q", name)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "deleted user %s with their sessions, consents and tokens\n", name)
		return nil
	case "mfa", "mfa-reset":
		return runUserMFA(ctx, st, args[0], name, stdout, stderr)
	default: // passwd
		if _, err := st.userByName(ctx, name); errors.Is(err, errNotFound) {
			return fmt.Errorf("no user %q", name)
		} else if err != nil {
			return err
		}
		pw, err := readPassword(stdin, stderr)
		if err != nil {
			return err
		}
		if err := validPassword(pw); err != nil {
			return err
		}
		h, err := hashPassword(pw, defaultPBKDF2Iter)
		if err != nil {
			return err
		}
		if err := st.setPassword(ctx, name, h); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "password of %s changed; their sessions, app authorizations (grants, tokens, codes, consents) and reset links are ended\n", name)
		return nil
	}
}

// userJSON is a user as the CLI prints it: never the password hash.
func userJSON(u user) map[string]any {
	return map[string]any{"username": u.Username, "sub": u.Sub, "admin": u.Admin, "created_at": u.CreatedAt,
		"name": u.Name, "email": u.Email, "email_verified": u.EmailVerified, "disabled": u.Disabled}
}

// readPassword reads one line: a hidden prompt (asked twice) on a terminal, else stdin as is.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(stderr, "Password: ")
		p1, err := readHidden(f)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Password again: ")
		p2, err := readHidden(f)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if p1 != p2 {
			return "", errors.New("the passwords differ")
		}
		return p1, nil
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on standard input (one line expected)")
	}
	return line, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// clientJSON is a client as `client list` prints it: never a secret.
type clientJSON struct {
	ClientID      string   `json:"client_id"`
	Name          string   `json:"name"`
	Description   string   `json:"description,omitempty"`
	RedirectURIs  []string `json:"redirect_uris"`
	Scope         string   `json:"scope"`
	Public        bool     `json:"public"`
	CreatedAt     int64    `json:"created_at,omitempty"`
	PostLogout    []string `json:"post_logout_redirect_uris,omitempty"`
	IDTokenAlg    string   `json:"id_token_signed_response_alg"`
	AlwaysRefresh bool     `json:"always_refresh,omitempty"`
	GrantTypes    []string `json:"grant_types"`
	LogoURI       string   `json:"logo_uri,omitempty"`
	ClientURI     string   `json:"client_uri,omitempty"`
	Dynamic       bool     `json:"dynamic,omitempty"`
	AllowGroups   []string `json:"allow_groups,omitempty"` // only their members may use it; none: every user
	RequireMFA    bool     `json:"require_mfa,omitempty"`
	ForwardAuth   []string `json:"forward_auth,omitempty"` // a protected app's origins (forwardauth.go)
}

func toClientJSON(c client) clientJSON {
	return clientJSON{ClientID: c.ID, Name: c.Name, Description: c.Description,
		RedirectURIs: c.RedirectURIs, Scope: strings.Join(c.Scopes, " "), Public: c.Public, CreatedAt: c.CreatedAt,
		PostLogout: c.PostLogoutURIs, IDTokenAlg: c.IDTokenAlg, AlwaysRefresh: c.AlwaysRefresh, GrantTypes: c.GrantTypes,
		LogoURI: c.LogoURI, ClientURI: c.ClientURI, Dynamic: c.Dynamic, AllowGroups: c.AllowGroups, RequireMFA: c.RequireMFA,
		ForwardAuth: c.ForwardOrigins}
}

// runClient is `oauthd client add|list|del|rotate-secret`.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usageError("client: want add, list, del or rotate-secret")
	}
	fs, db := subcommandFlags("client " + args[0])
	var sp clientSpec
	var uris, logoutURIs, grants, origins stringList
	var allow groupFlag
	if args[0] == "add" {
		fs.Var(&allow, "allow-group", "only members of this group may use the client (repeat for several; none: every user)")
		fs.StringVar(&sp.Name, "name", "", "name shown on the consent page")
		fs.Var(&uris, "redirect-uri", "a redirect URI (repeat for several)")
		fs.BoolVar(&sp.Public, "public", false, "public client (native or browser app, no secret, PKCE required)")
		fs.StringVar(&sp.Scope, "scope", "", "space-separated scopes the client may ask for")
		fs.StringVar(&sp.Description, "description", "", "description shown on the consent page")
		fs.Var(&logoutURIs, "post-logout-redirect-uri", "where RP-initiated logout may return (repeat for several)")
		fs.StringVar(&sp.IDTokenAlg, "id-token-alg", "RS256", "ID token signing algorithm: RS256 or ES256")
		fs.BoolVar(&sp.AlwaysRefresh, "always-refresh", false, "issue refresh tokens to OpenID requests even without offline_access")
		fs.Var(&grants, "grant", "a grant the client may use: authorization_code, refresh_token, client_credentials, device_code (repeat; default authorization_code with refresh_token)")
		fs.StringVar(&sp.LogoURI, "logo-uri", "", "https URL of a logo shown on the consent page")
		fs.StringVar(&sp.ClientURI, "homepage", "", "https URL of the application's homepage")
		sp.RequireMFA = fs.Bool("require-mfa", false, "signing in to this application needs a second factor or a user-verified passkey")
		fs.Var(&origins, "forward-auth", "a protected app: the origin (https://app.example.com) of an app behind the proxy's forward auth, instead of -redirect-uri (repeat for several)")
	}
	pos, err := parseArgs(fs, args[1:], getenv, "db") // flags before or after the id: `client del ID -db PATH`
	if err != nil {
		return err
	}
	nargs := map[string]int{"add": 0, "list": 0, "del": 1, "rotate-secret": 1}
	want, ok := nargs[args[0]]
	if !ok {
		return usageError("client: unknown command %q (want add, list, del or rotate-secret)", args[0])
	}
	if len(pos) != want {
		return usageError("client %s takes %d argument(s), got %d", args[0], want, len(pos))
	}
	var c client
	if args[0] == "add" {
		var err error
		sp.RedirectURIs, sp.PostLogoutURIs, sp.GrantTypes, sp.ForwardOrigins = uris, logoutURIs, grants, origins
		sp.Vetted = true // the operator made it
		if c, err = sp.build(); err != nil {
			return usageError("client add: %v", err)
		}
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	var id string
	if len(pos) > 0 {
		id = pos[0]
	}
	switch args[0] {
	case "add":
		secret := c.issueSecret()
		if err := st.createClientInGroups(ctx, c, allow); err != nil {
			return unknownGroups(err)
		}
		// The contract: exactly these keys, client_secret only for confidential clients, and
		// forward_auth (the origins) only for a protected app.
		out := map[string]any{"client_id": c.ID, "name": c.Name, "redirect_uris": c.RedirectURIs, "public": c.Public}
		if len(c.ForwardOrigins) > 0 {
			out["forward_auth"], out["redirect_uris"] = c.ForwardOrigins, []string{}
		}
		if secret != "" {
			out["client_secret"] = secret
		}
		return printJSON(stdout, out)
	case "list":
		cs, err := st.listClients(ctx)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if err := printJSON(stdout, toClientJSON(c)); err != nil {
				return err
			}
		}
		return nil
	case "del":
		if err := st.deleteClient(ctx, id); errors.Is(err, errNotFound) {
			return fmt.Errorf("no client %q", id)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "deleted client %s with its consents, codes and tokens\n", id)
		return nil
	default: // rotate-secret
		c, err := st.clientByID(ctx, id)
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("no client %q", id)
		} else if err != nil {
			return err
		}
		if c.Public {
			return fmt.Errorf("client %s is public: it has no secret", id)
		}
		secret := c.issueSecret()
		if err := st.setClientSecret(ctx, id, c.SecretHash); err != nil {
			return err
		}
		return printJSON(stdout, map[string]string{"client_id": id, "client_secret": secret})
	}
}

// runKeys is `oauthd keys rotate|list`: ID token signing keys.
// runBackup is "oauthd backup [-db PATH] FILE".
func runBackup(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs, db := subcommandFlags("backup")
	if err := parseFlags(fs, args, getenv, "db"); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("backup: want one FILE to write (a new file)")
	}
	if err := backup(ctx, *db, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backed up %s to %s\n", *db, fs.Arg(0))
	fmt.Fprintln(stdout, backupKeyNote(*db))
	return nil
}

func runKeys(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "list") {
		return usageError("keys: want rotate or list")
	}
	fs, db := subcommandFlags("keys " + args[0])
	if err := parseFlags(fs, args[1:], getenv, "db"); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("keys %s takes no arguments", args[0])
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	if args[0] == "rotate" {
		keys, err := st.rotateKeys(ctx, generateKey, time.Now().Unix())
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := printJSON(stdout, map[string]string{"kid": k.Kid, "alg": k.Alg, "status": "current"}); err != nil {
				return err
			}
		}
		return nil
	}
	keys, err := st.listKeys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		status := "current"
		if k.RetiredAt != 0 {
			status = "retired"
		}
		out := map[string]any{"kid": k.JWK.Kid, "alg": k.JWK.Alg, "status": status, "created_at": k.CreatedAt}
		if k.RetiredAt != 0 {
			out["retired_at"] = k.RetiredAt
		}
		if err := printJSON(stdout, out); err != nil {
			return err
		}
	}
	return nil
}

// runRegistrationToken is `oauthd registration-token create`: an RFC 7591 initial access
// token, printed once as JSON and stored as a hash.
func runRegistrationToken(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] != "create" {
		return usageError("registration-token: want create")
	}
	fs, db := subcommandFlags("registration-token create")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	uses := fs.Int("uses", 1, "how many clients it may register")
	scope := fs.String("scope", "", "space-separated scopes the clients it registers may have (besides the OpenID ones and -registration-scopes)")
	var grants stringList
	fs.Var(&grants, "grant", "a grant the clients it registers may have besides the user-driven ones: client_credentials (repeat for several)")
	if err := parseFlags(fs, args[1:], getenv, "db"); err != nil {
		return err
	}
	if fs.NArg() != 0 || *ttl < time.Minute || *uses < 1 {
		return usageError("registration-token create takes -ttl (at least 1m), -uses (at least 1), -scope and -grant, no arguments")
	}
	scopes, ok := parseScope(*scope)
	if !ok {
		return usageError("registration-token create: -scope %q has characters outside RFC 6749 §3.3", *scope)
	}
	var gts []string
	for _, g := range grants {
		if a, ok := grantAliases[g]; ok {
			g = a
		}
		if !slices.Contains(knownGrants, g) {
			return usageError("registration-token create: unknown grant %q (client_credentials, authorization_code, refresh_token, device_code)", g)
		}
		if !slices.Contains(gts, g) {
			gts = append(gts, g)
		}
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	tok, now := newSecret(), time.Now()
	if err := st.createRegistrationToken(ctx, hashSecret(tok), *uses, now.Add(*ttl), now.Unix(), scopes, gts); err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"registration_token": tok, "expires_at": now.Add(*ttl).Unix(), "uses": *uses,
		"scope": strings.Join(scopes, " "), "grant_types": nonNil(gts)})
}
