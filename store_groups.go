package main

// Groups, per-app access and custom claims (issue 12): the SQL behind groups.go. A group has
// members and claims; a client's allow-list (client_groups) names the groups whose members
// may use it, and an empty list means every user. Every change that can narrow someone's
// access revokes, in its own transaction, whatever a user no longer may hold
// (revokeDisallowed), and drops the caches after its commit. The tables' triggers move the
// generation counter (cache.go), so that a change made by the CLI in another process reaches
// a running server's caches at its next request.

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// group is a named set of users.
type group struct {
	ID          int64
	Name        string
	Description string
	CreatedAt   int64
	Members     int // how many users belong to it
}

// claim is one custom claim: a name and a JSON value (compact, at most maxClaimValue bytes).
type claim struct {
	Name  string
	Value json.RawMessage
}

// userGroups is what the access rule and the claims need of a user: their groups and the
// custom claims they get.
type userGroups struct {
	Groups []string // group names, sorted case-insensitively; never nil
	Claims []claim  // the user's own claims, then their groups' (see mergeClaims), sorted by name
}

// missingError names the groups or users an operation referred to that do not exist.
type missingError struct {
	kind  string // "group" or "user"
	names []string
}

func (e *missingError) Error() string {
	q := make([]string, len(e.names))
	for i, n := range e.names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return "there is no " + e.kind + " named " + q[0]
	}
	return "there are no " + e.kind + "s named " + strings.Join(q, ", ")
}

// Is makes a missingError an errNotFound.
func (e *missingError) Is(target error) bool { return target == errNotFound }

// errLastAdmin refuses a change that would leave the server without an enabled administrator.
var errLastAdmin = errors.New("this is the last enabled administrator: make another user an administrator first")

// txQuery runs a query inside tx (administrative reads that must see the transaction).
func txQuery(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	return tx.QueryContext(context.WithoutCancel(ctx), q, args...)
}

// idsByName resolves group or user names (case-insensitively) inside tx, in their order; a
// name that matches nothing is reported in a missingError with every other such name.
func (st *store) idsByName(ctx context.Context, tx *sql.Tx, kind string, names []string) ([]int64, error) {
	q := "SELECT id FROM groups WHERE name = ?"
	if kind == "user" {
		q = "SELECT id FROM users WHERE username = ?"
	}
	var ids []int64
	var missing []string
	for _, n := range names {
		var id int64
		err := st.txRow(ctx, tx, q, n).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			missing = append(missing, n)
			continue
		} else if err != nil {
			return nil, err
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(missing) > 0 {
		return nil, &missingError{kind: kind, names: missing}
	}
	return ids, nil
}

// revokeDisallowed is the one place that ends access nobody may hold any longer: for every
// client with an allow-list, the grants (with their tokens), codes, device authorizations
// and remembered consents of every user who is in none of its groups. Every change that can
// narrow access (membership removed, group deleted, allow-list set) runs it in its own
// transaction; the caller drops the caches after the commit. It returns how many grants
// it revoked.
func (st *store) revokeDisallowed(ctx context.Context, tx *sql.Tx) (int64, error) {
	var grants int64
	for _, table := range []string{"grants", "codes", "device_codes", "consents"} {
		q := "DELETE FROM " + table + " WHERE user_id IS NOT NULL AND client_id IN (SELECT client_id FROM client_groups) " +
			"AND NOT EXISTS (SELECT 1 FROM client_groups cg JOIN group_members m ON m.group_id = cg.group_id " +
			"WHERE cg.client_id = " + table + ".client_id AND m.user_id = " + table + ".user_id)"
		res, err := st.txExec(ctx, tx, q)
		if err != nil {
			return 0, err
		}
		if table == "grants" {
			grants, _ = res.RowsAffected()
		}
	}
	return grants, nil
}

// ---- groups

// clientGroupsCol reads a client's allow-list with the client (clientCols): its group names,
// space-separated (names have no spaces).
const clientGroupsCol = "coalesce((SELECT group_concat(g.name, ' ') FROM client_groups cg JOIN groups g ON g.id = cg.group_id " +
	"WHERE cg.client_id = clients.id), '')"

const groupCols = "g.id, g.name, g.description, g.created_at, (SELECT count(*) FROM group_members m WHERE m.group_id = g.id)"

func scanGroup(row rowScanner) (group, error) {
	var g group
	err := row.Scan(&g.ID, &g.Name, &g.Description, &g.CreatedAt, &g.Members)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return g, err
}

// createGroup adds a group; errExists when the name is taken (case-insensitively).
func (st *store) createGroup(ctx context.Context, g group) error {
	_, err := st.exec(ctx, "INSERT INTO groups(name, description, created_at) VALUES(?, ?, ?)", g.Name, g.Description, g.CreatedAt)
	return mapConstraint(err)
}

// groupByName is the group with that name (case-insensitively).
func (st *store) groupByName(ctx context.Context, name string) (group, error) {
	return scanGroup(st.queryRow(ctx, "SELECT "+groupCols+" FROM groups g WHERE g.name = ?", name))
}

// listGroups lists every group by name.
func (st *store) listGroups(ctx context.Context) ([]group, error) {
	rows, err := st.query(ctx, "SELECT "+groupCols+" FROM groups g ORDER BY g.name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []group
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// setGroupDescription changes a group's description.
func (st *store) setGroupDescription(ctx context.Context, name, desc string) error {
	return affected(st.exec(ctx, "UPDATE groups SET description = ? WHERE name = ?", desc, name))
}

// groupMembers lists the members of a group by username.
func (st *store) groupMembers(ctx context.Context, groupID int64) ([]user, error) {
	rows, err := st.query(ctx, "SELECT "+userCols+" FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = ?) ORDER BY username", groupID)
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

// clientsAllowing lists the clients whose allow-list names the group.
func (st *store) clientsAllowing(ctx context.Context, groupID int64) ([]client, error) {
	rows, err := st.query(ctx, "SELECT "+clientCols+" FROM clients WHERE id IN (SELECT client_id FROM client_groups WHERE group_id = ?) ORDER BY created_at, id", groupID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// deleteGroup deletes a group with its memberships and claims and takes it off every
// allow-list; members who could use an app only through it lose their grants there. It
// returns the clients whose allow-list named it, as they were before.
func (st *store) deleteGroup(ctx context.Context, name string) ([]client, int64, error) {
	defer st.cache.flush()
	var clients []client
	var revoked int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		clients, revoked = nil, 0
		var id int64
		if err := st.txRow(ctx, tx, "SELECT id FROM groups WHERE name = ?", name).Scan(&id); errors.Is(err, sql.ErrNoRows) {
			return &missingError{kind: "group", names: []string{name}}
		} else if err != nil {
			return err
		}
		rows, err := txQuery(ctx, tx, "SELECT "+clientCols+" FROM clients WHERE id IN (SELECT client_id FROM client_groups WHERE group_id = ?) ORDER BY created_at, id", id)
		if err != nil {
			return err
		}
		for rows.Next() {
			c, err := scanClient(rows)
			if err != nil {
				rows.Close()
				return err
			}
			clients = append(clients, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "DELETE FROM groups WHERE id = ?", id); err != nil {
			return err
		}
		revoked, err = st.revokeDisallowed(ctx, tx)
		return err
	})
	return clients, revoked, err
}

// addMembers puts users into a group; it returns those who were not members yet. Unknown
// users fail the whole change.
func (st *store) addMembers(ctx context.Context, groupName string, usernames []string) ([]string, error) {
	defer st.cache.flush()
	var added []string
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var err error
		added, err = st.changeMembers(ctx, tx, groupName, usernames,
			"INSERT OR IGNORE INTO group_members(group_id, user_id) SELECT ?, id FROM users WHERE username = ?")
		return err
	})
	return added, err
}

// removeMembers takes users out of a group and revokes what they no longer may hold; it
// returns those who were members. Unknown users fail the whole change.
func (st *store) removeMembers(ctx context.Context, groupName string, usernames []string) ([]string, int64, error) {
	defer st.cache.flush()
	var removed []string
	var revoked int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if removed, err = st.changeMembers(ctx, tx, groupName, usernames,
			"DELETE FROM group_members WHERE group_id = ? AND user_id = (SELECT id FROM users WHERE username = ?)"); err != nil {
			return err
		}
		revoked, err = st.revokeDisallowed(ctx, tx)
		return err
	})
	return removed, revoked, err
}

// changeMembers runs stmt (its arguments: the group's id, a username) for each user, inside
// tx, after checking that the group and every user exist; it returns the users the statement
// changed.
func (st *store) changeMembers(ctx context.Context, tx *sql.Tx, groupName string, usernames []string, stmt string) ([]string, error) {
	gids, err := st.idsByName(ctx, tx, "group", []string{groupName})
	if err != nil {
		return nil, err
	}
	if _, err := st.idsByName(ctx, tx, "user", usernames); err != nil {
		return nil, err
	}
	var changed []string
	for _, n := range usernames {
		r, err := st.txExec(ctx, tx, stmt, gids[0], n)
		if err != nil {
			return nil, err
		}
		if k, _ := r.RowsAffected(); k > 0 {
			changed = append(changed, n)
		}
	}
	return changed, nil
}

// setUserGroupsTx makes the user a member of exactly these groups, inside tx, and revokes
// what the user no longer may hold.
func (st *store) setUserGroupsTx(ctx context.Context, tx *sql.Tx, userID int64, groups []string) (int64, error) {
	ids, err := st.idsByName(ctx, tx, "group", groups)
	if err != nil {
		return 0, err
	}
	if _, err := st.txExec(ctx, tx, "DELETE FROM group_members WHERE user_id = ?", userID); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, err := st.txExec(ctx, tx, "INSERT INTO group_members(group_id, user_id) VALUES(?, ?)", id, userID); err != nil {
			return 0, err
		}
	}
	return st.revokeDisallowed(ctx, tx)
}

// setClientGroupsTx sets a client's allow-list to exactly these groups (none: every user),
// inside tx, and revokes what users outside them hold.
func (st *store) setClientGroupsTx(ctx context.Context, tx *sql.Tx, clientID string, groups []string) (int64, error) {
	ids, err := st.idsByName(ctx, tx, "group", groups)
	if err != nil {
		return 0, err
	}
	if _, err := st.txExec(ctx, tx, "DELETE FROM client_groups WHERE client_id = ?", clientID); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, err := st.txExec(ctx, tx, "INSERT INTO client_groups(client_id, group_id) VALUES(?, ?)", clientID, id); err != nil {
			return 0, err
		}
	}
	return st.revokeDisallowed(ctx, tx)
}

// createUserInGroups adds a user who belongs to these groups, atomically: an unknown group
// creates nothing.
func (st *store) createUserInGroups(ctx context.Context, u user, groups []string) error {
	defer st.cache.flush()
	return mapConstraint(st.tx(ctx, func(tx *sql.Tx) error {
		if err := insertUser(ctx, tx, u); err != nil {
			return err
		}
		if len(groups) == 0 {
			return nil
		}
		var id int64
		if err := st.txRow(ctx, tx, "SELECT id FROM users WHERE username = ?", u.Username).Scan(&id); err != nil {
			return err
		}
		_, err := st.setUserGroupsTx(ctx, tx, id, groups)
		return err
	}))
}

// createClientInGroups registers a client whose allow-list is groups, atomically.
func (st *store) createClientInGroups(ctx context.Context, c client, groups []string) error {
	defer st.cache.dropClient(c.ID)
	return mapConstraint(st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := st.txExec(ctx, tx, insertClientSQL,
			append([]any{c.ID, c.CreatedAt}, clientArgs(c)...)...); err != nil {
			return err
		}
		if len(c.ForwardOrigins) > 0 {
			if err := st.setForwardOriginsTx(ctx, tx, c); err != nil {
				return err
			}
		}
		if len(groups) == 0 {
			return nil
		}
		_, err := st.setClientGroupsTx(ctx, tx, c.ID, groups)
		return err
	}))
}

// updateClientInGroups saves a client's registration and sets its allow-list to groups, in
// one transaction; it returns how many grants the narrower list revoked.
func (st *store) updateClientInGroups(ctx context.Context, c client, groups []string) (int64, error) {
	defer st.cache.flush()
	var revoked int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.updateClientTx(ctx, tx, c); err != nil {
			return err
		}
		var err error
		revoked, err = st.setClientGroupsTx(ctx, tx, c.ID, groups)
		return err
	})
	return revoked, err
}

// setClientGroups sets a client's allow-list alone.
func (st *store) setClientGroups(ctx context.Context, clientID string, groups []string) (int64, error) {
	defer st.cache.flush()
	var revoked int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.txRow(ctx, tx, "SELECT 1 FROM clients WHERE id = ?", clientID).Scan(new(int)); errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		} else if err != nil {
			return err
		}
		var err error
		revoked, err = st.setClientGroupsTx(ctx, tx, clientID, groups)
		return err
	})
	return revoked, err
}

// groupsByUser maps every user id to their group names (sorted), for listings.
func (st *store) groupsByUser(ctx context.Context) (map[int64][]string, error) {
	rows, err := st.query(ctx, "SELECT m.user_id, g.name FROM group_members m JOIN groups g ON g.id = m.group_id ORDER BY g.name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]string{}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return nil, err
		}
		out[id] = append(out[id], name)
	}
	return out, rows.Err()
}

// ---- custom claims

// claimTable is the claims table and owner column of "user" or "group" claims.
func claimTable(kind string) (table, owner string) {
	if kind == "group" {
		return "group_claims", "group_id"
	}
	return "user_claims", "user_id"
}

// ownClaims lists the claims set on one user or group (not inherited ones), by name.
func (st *store) ownClaims(ctx context.Context, kind string, id int64) ([]claim, error) {
	table, owner := claimTable(kind)
	rows, err := st.query(ctx, "SELECT name, value FROM "+table+" WHERE "+owner+" = ? ORDER BY name", id)
	if err != nil {
		return nil, err
	}
	return scanClaims(rows)
}

// scanClaims reads name, value rows and closes them.
func scanClaims(rows *sql.Rows) ([]claim, error) {
	defer rows.Close()
	var out []claim
	for rows.Next() {
		var c claim
		var v string
		if err := rows.Scan(&c.Name, &v); err != nil {
			return nil, err
		}
		c.Value = json.RawMessage(v)
		out = append(out, c)
	}
	return out, rows.Err()
}

// setClaims sets and removes claims of the user or group called name in one transaction
// (set and del are already validated) and returns its claims afterwards. More than
// maxClaims claims on one owner are refused.
func (st *store) setClaims(ctx context.Context, kind, name string, set []claim, del []string) ([]claim, error) {
	defer st.cache.flush()
	table, owner := claimTable(kind)
	var id int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		ids, err := st.idsByName(ctx, tx, kind, []string{name})
		if err != nil {
			return err
		}
		id = ids[0]
		for _, n := range del {
			if _, err := st.txExec(ctx, tx, "DELETE FROM "+table+" WHERE "+owner+" = ? AND name = ?", id, n); err != nil {
				return err
			}
		}
		for _, c := range set {
			if _, err := st.txExec(ctx, tx, "INSERT INTO "+table+"("+owner+", name, value) VALUES(?, ?, ?) "+
				"ON CONFLICT("+owner+", name) DO UPDATE SET value = excluded.value", id, c.Name, string(c.Value)); err != nil {
				return err
			}
		}
		var n int
		if err := st.txRow(ctx, tx, "SELECT count(*) FROM "+table+" WHERE "+owner+" = ?", id).Scan(&n); err != nil {
			return err
		}
		if n > maxClaims {
			return &specError{msg: fmt.Sprintf("a %s may have at most %d custom claims (this change would make %d)", kind, maxClaims, n)}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st.ownClaims(ctx, kind, id)
}

// loadAccess reads a user's groups and the claims they get: their own, then those of their
// groups in group name order, the first to give a name winning (mergeClaims).
func (st *store) loadAccess(ctx context.Context, userID int64) (userGroups, error) {
	acc := userGroups{Groups: []string{}}
	rows, err := st.query(ctx, "SELECT g.name FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = ? ORDER BY g.name", userID)
	if err != nil {
		return acc, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return acc, err
		}
		acc.Groups = append(acc.Groups, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return acc, err
	}
	own, err := st.ownClaims(ctx, "user", userID)
	if err != nil {
		return acc, err
	}
	rows, err = st.query(ctx, "SELECT c.name, c.value FROM group_claims c JOIN group_members m ON m.group_id = c.group_id "+
		"JOIN groups g ON g.id = c.group_id WHERE m.user_id = ? ORDER BY g.name, c.name", userID)
	if err != nil {
		return acc, err
	}
	inherited, err := scanClaims(rows)
	if err != nil {
		return acc, err
	}
	acc.Groups = sortedGroups(acc.Groups)
	acc.Claims = mergeClaims(own, inherited)
	return acc, nil
}

// mergeClaims combines a user's own claims with those of their groups (given in group name
// order): the user's own claim wins; among groups, the first group in name order that
// gives a name wins. The result is sorted by name.
func mergeClaims(own, inherited []claim) []claim {
	out := slices.Clone(own)
	for _, c := range inherited {
		if !slices.ContainsFunc(out, func(o claim) bool { return o.Name == c.Name }) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b claim) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// maxCachedAccess bounds the access cache.
const maxCachedAccess = 10_000

// cachedAccess is loadAccess through the cache. As with cachedClient, the caller has called
// fresh during this request, so that changes by other processes are seen.
func (st *store) cachedAccess(ctx context.Context, userID int64) (userGroups, error) {
	c := st.cache
	c.mu.Lock()
	e := c.epoch
	acc, ok := c.access[userID]
	c.mu.Unlock()
	if ok {
		return acc, nil
	}
	acc, err := st.loadAccess(ctx, userID)
	if err != nil {
		return acc, err
	}
	c.mu.Lock()
	if c.epoch == e {
		if len(c.access) >= maxCachedAccess {
			for k := range c.access { // evict an arbitrary entry
				delete(c.access, k)
				break
			}
		}
		c.access[userID] = acc
	}
	c.mu.Unlock()
	return acc, nil
}

// ---- administrators' changes to users

// userChange is what `user set` and the admin user page change; nil fields stay.
type userChange struct {
	Name          *string
	Email         *string
	EmailVerified *bool
	Admin         *bool
	Groups        *[]string // exact set of group names
}

// updateUser applies an administrator's change to a user in one transaction and returns the
// user afterwards. A change that would leave no enabled administrator is refused
// (errLastAdmin); a new email is verified unless the change says otherwise (the
// administrator vouches for it); an empty email is never verified.
func (st *store) updateUser(ctx context.Context, name string, ch userChange, now int64) (user, error) {
	defer st.cache.flush()
	var u user
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if u, err = scanUser(st.txRow(ctx, tx, "SELECT "+userCols+" FROM users WHERE username = ?", name)); err != nil {
			return err
		}
		old := u
		if ch.Name != nil {
			u.Name = *ch.Name
		}
		if ch.Email != nil {
			if *ch.Email != u.Email {
				u.EmailVerified = true
			}
			u.Email = *ch.Email
		}
		if ch.EmailVerified != nil {
			u.EmailVerified = *ch.EmailVerified
		}
		if u.Email == "" {
			u.EmailVerified = false
		}
		if ch.Admin != nil {
			u.Admin = *ch.Admin
		}
		if u.Name != old.Name || u.Email != old.Email || u.EmailVerified != old.EmailVerified {
			u.UpdatedAt = now
		}
		if _, err := st.txExec(ctx, tx, "UPDATE users SET name = ?, email = ?, email_verified = ?, admin = ?, updated_at = ? WHERE id = ?",
			u.Name, u.Email, u.EmailVerified, u.Admin, u.UpdatedAt, u.ID); err != nil {
			return err
		}
		if old.Admin && !u.Admin {
			var n int
			if err := st.txRow(ctx, tx, "SELECT count(*) FROM users WHERE admin = 1 AND disabled = 0").Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return errLastAdmin
			}
		}
		if ch.Groups != nil {
			_, err = st.setUserGroupsTx(ctx, tx, u.ID, *ch.Groups)
		}
		return err
	})
	return u, err
}

// admins lists the enabled administrators, for the no-access page's "whom to ask".
func (st *store) admins(ctx context.Context) ([]user, error) {
	rows, err := st.query(ctx, "SELECT "+userCols+" FROM users WHERE admin = 1 AND disabled = 0 ORDER BY username LIMIT 5")
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
