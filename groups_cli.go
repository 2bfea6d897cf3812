package main

// The command line of groups, per-app access and custom claims (issue 12): `oauthd group …`,
// `oauthd user set` and `oauthd user claim`, and parseArgs, which lets these commands take
// their flags before, between or after their arguments, as people type them.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// parseArgs is parseFlags for commands whose flags may come before, between or after their
// positional arguments (`group add family -description x` and `group add -description x
// family` are the same); a "--" ends the flags. It returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, getenv func(string) string, envFlags ...string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpErr{fs}
			}
			return nil, usageError("%v", err)
		}
		left := fs.Args()
		if used := len(rest) - len(left); used > 0 && rest[used-1] == "--" && !takesValue(fs, rest[:used-1]) {
			pos = append(pos, left...) // after "--" everything is an argument
			break
		}
		if len(left) == 0 {
			break
		}
		pos, rest = append(pos, left[0]), left[1:]
	}
	// The environment, for flags the command line left unset.
	if err := parseFlags(fs, nil, getenv, envFlags...); err != nil {
		return nil, err
	}
	return pos, nil
}

// takesValue reports whether the last of args is a flag still waiting for its value (so that
// a "--" after it is that value, not the end of the flags).
func takesValue(fs *flag.FlagSet, args []string) bool {
	if len(args) == 0 {
		return false
	}
	a := args[len(args)-1]
	if len(a) < 2 || a[0] != '-' || strings.Contains(a, "=") || a == "--" {
		return false
	}
	f := fs.Lookup(strings.TrimLeft(a, "-"))
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// groupJSON is a group as the CLI prints it.
func groupJSON(g group) map[string]any {
	return map[string]any{"name": g.Name, "description": g.Description, "members": g.Members, "created_at": g.CreatedAt}
}

// runGroup is `oauthd group add|del|list|members|add-member|remove-member|claim`.
func runGroup(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	const cmds = "add, del, list, members, add-member, remove-member or claim"
	if len(args) == 0 {
		return usageError("group: want %s", cmds)
	}
	fs, db := subcommandFlags("group " + args[0])
	var desc string
	if args[0] == "add" {
		fs.StringVar(&desc, "description", "", "what the group is for")
	}
	pos, err := parseArgs(fs, args[1:], getenv, "db")
	if err != nil {
		return err
	}
	// How many arguments each command takes: exactly n, or at least n when negative.
	nargs := map[string]int{"add": 1, "del": 1, "list": 0, "members": 1, "add-member": -2, "remove-member": -2, "claim": -1}
	want, ok := nargs[args[0]]
	switch {
	case !ok:
		return usageError("group: unknown command %q (want %s)", args[0], cmds)
	case want >= 0 && len(pos) != want:
		return usageError("group %s takes %d argument(s), got %d", args[0], want, len(pos))
	case want < 0 && len(pos) < -want:
		return usageError("group %s takes at least %d arguments, got %d", args[0], -want, len(pos))
	}
	if len(pos) > 0 && args[0] != "add" {
		if err := validGroupName(pos[0]); err != nil {
			return usageError("group %s: %v", args[0], err)
		}
	}
	var set []claim
	var del []string
	switch args[0] {
	case "add":
		if err := validGroupName(pos[0]); err != nil {
			return usageError("group add: %v", err)
		}
		if err := validGroupDescription(desc); err != nil {
			return usageError("group add: %v", err)
		}
	case "claim":
		if set, del, err = parseClaimArgs(pos[1:]); err != nil {
			return usageError("group claim: %v", err)
		}
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	switch args[0] {
	case "add":
		g := group{Name: pos[0], Description: strings.TrimSpace(desc), CreatedAt: time.Now().Unix()}
		if err := st.createGroup(ctx, g); errors.Is(err, errExists) {
			return fmt.Errorf("a group named %q already exists (names are compared without case)", g.Name)
		} else if err != nil {
			return err
		}
		return printJSON(stdout, groupJSON(g))
	case "list":
		gs, err := st.listGroups(ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			if err := printJSON(stdout, groupJSON(g)); err != nil {
				return err
			}
		}
		return nil
	case "members":
		g, err := st.groupByName(ctx, pos[0])
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("there is no group named %q", pos[0])
		} else if err != nil {
			return err
		}
		us, err := st.groupMembers(ctx, g.ID)
		if err != nil {
			return err
		}
		for _, u := range us {
			if err := printJSON(stdout, userJSON(u)); err != nil {
				return err
			}
		}
		return nil
	case "del":
		clients, revoked, err := st.deleteGroup(ctx, pos[0])
		if err != nil {
			return err
		}
		for _, c := range clients {
			if len(c.AllowGroups) == 1 {
				fmt.Fprintf(stderr, "removed from the allow-list of %s (%s), which is now open to every user\n", c.Name, c.ID)
			} else {
				fmt.Fprintf(stderr, "removed from the allow-list of %s (%s)\n", c.Name, c.ID)
			}
		}
		fmt.Fprintf(stderr, "deleted group %s; %d grant(s) revoked\n", pos[0], revoked)
		return nil
	case "add-member":
		added, err := st.addMembers(ctx, pos[0], pos[1:])
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "added to %s: %s\n", pos[0], listOrNone(added))
		return nil
	case "remove-member":
		removed, revoked, err := st.removeMembers(ctx, pos[0], pos[1:])
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "removed from %s: %s; %d grant(s) revoked\n", pos[0], listOrNone(removed), revoked)
		return nil
	default: // claim
		cs, err := st.setClaims(ctx, "group", pos[0], set, del)
		if err != nil {
			return err
		}
		return printJSON(stdout, claimsObject(cs))
	}
}

// listOrNone is names joined for a message, or "nobody new".
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "nobody (no change)"
	}
	return strings.Join(names, ", ")
}

// optBool is a boolean flag that remembers whether it was given (`-admin=false` is a change,
// no -admin is none).
type optBool struct {
	set, v bool
}

func (b *optBool) String() string   { return fmt.Sprint(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", s)
	}
	b.v, b.set = v, true
	return nil
}

// runUserSet is `oauthd user set NAME [-name TEXT] [-email ADDR] [-email-verified=B] [-admin=B]`.
func runUserSet(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs, db := subcommandFlags("user set")
	name := fs.String("name", "", "the user's full name (OIDC name claim; \"\" clears it)")
	email := fs.String("email", "", "the user's email address (\"\" clears it); verified unless -email-verified=false")
	var verified, admin optBool
	fs.Var(&verified, "email-verified", "whether the email address is verified: true or false")
	fs.Var(&admin, "admin", "whether the user is an administrator: true or false")
	pos, err := parseArgs(fs, args, getenv, "db")
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("user set takes one NAME, got %d argument(s)", len(pos))
	}
	var ch userChange
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			ch.Name = name
		case "email":
			ch.Email = email
		}
	})
	if verified.set {
		ch.EmailVerified = &verified.v
	}
	if admin.set {
		ch.Admin = &admin.v
	}
	if ch == (userChange{}) {
		return usageError("user set: nothing to change (give -name, -email, -email-verified or -admin)")
	}
	if err := validProfile(*name, *email); err != nil {
		return usageError("user set: %v", err)
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := st.updateUser(ctx, pos[0], ch, time.Now().Unix())
	switch {
	case errors.Is(err, errNotFound):
		return fmt.Errorf("no user %q", pos[0])
	case errors.Is(err, errLastAdmin):
		return fmt.Errorf("user %s: %v", pos[0], err)
	case err != nil:
		return err
	}
	return st.printUser(ctx, stdout, u)
}

// runUserClaim is `oauthd user claim NAME [KEY=JSON …]`: sets (KEY=JSON) or removes (KEY=)
// custom claims and prints the user's claims as one JSON object.
func runUserClaim(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs, db := subcommandFlags("user claim")
	pos, err := parseArgs(fs, args, getenv, "db")
	if err != nil {
		return err
	}
	if len(pos) < 1 {
		return usageError("user claim takes a NAME and KEY=JSON or KEY= arguments")
	}
	set, del, err := parseClaimArgs(pos[1:])
	if err != nil {
		return usageError("user claim: %v", err)
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	cs, err := st.setClaims(ctx, "user", pos[0], set, del)
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("no user %q", pos[0])
	} else if err != nil {
		return err
	}
	return printJSON(stdout, claimsObject(cs))
}

// printUser prints one user as `user list` does, with their groups.
func (st *store) printUser(ctx context.Context, w io.Writer, u user) error {
	acc, err := st.loadAccess(ctx, u.ID)
	if err != nil {
		return err
	}
	j := userJSON(u)
	j["groups"] = acc.Groups
	return printJSON(w, j)
}

// groupFlag collects repeated -group / -allow-group values, each checked as a group name.
type groupFlag []string

func (g *groupFlag) String() string { return strings.Join(*g, " ") }
func (g *groupFlag) Set(v string) error {
	if err := validGroupName(v); err != nil {
		return err
	}
	*g = append(*g, v)
	return nil
}

// unknownGroups turns a missingError about groups into the CLI's message, naming them.
func unknownGroups(err error) error {
	var me *missingError
	if errors.As(err, &me) {
		return errors.New(me.Error() + " (create it with `oauthd group add NAME`)")
	}
	return err
}
