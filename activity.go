package main

// The activity page (/admin/activity): the latest events (sign-ins with address and browser,
// failed sign-ins, consents, revocations, administrator actions, registrations), stored in
// the database for -event-retention (30 days by default) and filterable by user and app.
// An event never holds a secret, a token, a code or a password: only who, which app, from
// where, and a short description written by oauthd itself.

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// migrationEvents is the schema step of the activity log.
const migrationEvents = `
CREATE TABLE events (
	id        INTEGER PRIMARY KEY,
	at        INTEGER NOT NULL,                  -- unix seconds
	kind      TEXT NOT NULL,                     -- sign-in, sign-in failed, consent, revocation, admin, registration
	username  TEXT NOT NULL DEFAULT '',          -- who (a known account only)
	client_id TEXT NOT NULL DEFAULT '',
	ip        TEXT NOT NULL DEFAULT '',
	browser   TEXT NOT NULL DEFAULT '',          -- a short description of the User-Agent
	detail    TEXT NOT NULL DEFAULT ''           -- written by oauthd, never a secret
);
CREATE INDEX events_at ON events(at);
`

// event is one line of the activity log.
type event struct {
	At                                            int64
	Kind, Username, ClientID, IP, Browser, Detail string
}

// record stores an event of the request (address and browser from it); a failure is logged,
// never shown: the action itself has happened.
func (s *server) record(r *http.Request, kind, username, clientID, detail string) {
	e := event{At: s.now().Unix(), Kind: kind, Username: username, ClientID: clientID, IP: s.sourceAddr(r), Browser: browserName(r.UserAgent()), Detail: detail}
	if _, err := s.store.exec(context.WithoutCancel(r.Context()), "INSERT INTO events(at, kind, username, client_id, ip, browser, detail) VALUES(?, ?, ?, ?, ?, ?, ?)",
		e.At, e.Kind, e.Username, e.ClientID, e.IP, e.Browser, e.Detail); err != nil {
		s.log.Error("recording an event failed", "kind", kind, "cause", err)
	}
}

// listEvents returns the newest events (at most limit), optionally of one user and one app.
func (st *store) listEvents(ctx context.Context, username, clientID string, limit int) ([]event, error) {
	q := "SELECT at, kind, username, client_id, ip, browser, detail FROM events WHERE 1"
	var args []any
	if username != "" {
		q += " AND username = ? COLLATE NOCASE"
		args = append(args, username)
	}
	if clientID != "" {
		q += " AND client_id = ?"
		args = append(args, clientID)
	}
	rows, err := st.query(ctx, q+" ORDER BY at DESC, id DESC LIMIT ?", append(args, limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []event
	for rows.Next() {
		var e event
		if err := rows.Scan(&e.At, &e.Kind, &e.Username, &e.ClientID, &e.IP, &e.Browser, &e.Detail); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// purgeEvents deletes the events older than the retention.
func (st *store) purgeEvents(ctx context.Context, before int64) error {
	_, err := st.exec(ctx, "DELETE FROM events WHERE at < ?", before)
	return err
}

// activityPage is /admin/activity's data.
type activityPage struct {
	pageData
	Events     []event
	FilterUser string            // the user filter ("" for all)
	FilterApp  string            // the app filter, a client id ("" for all)
	Apps       map[string]string // client id -> name
	Retention  string
}

// handleActivity shows the latest events to an administrator.
func (s *server) handleActivity(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	page := activityPage{pageData: s.pageData(sess, ""), FilterUser: strings.TrimSpace(q.Get("user")), FilterApp: strings.TrimSpace(q.Get("app")),
		Apps: map[string]string{}, Retention: retentionText(s.cfg.EventRetention)}
	cs, err := s.store.listClients(r.Context())
	if err == nil {
		for _, c := range cs {
			page.Apps[c.ID] = c.Name
		}
		page.Events, err = s.store.listEvents(r.Context(), page.FilterUser, page.FilterApp, 300)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.render(w, http.StatusOK, "activity", page)
}

// parseRetention reads -event-retention: a Go duration or a number of days ("30d").
func parseRetention(v string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 3650 {
			return 0, fmt.Errorf("%q: want a number of days (1d to 3650d) or a duration such as 720h", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Hour {
		return 0, fmt.Errorf("%q: want a number of days such as 30d, or a duration of at least 1h", v)
	}
	return d, nil
}

// retentionText says a retention for the page ("30 days").
func retentionText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	}
	return d.String()
}
