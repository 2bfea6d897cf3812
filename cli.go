package main

// Command-line help: `oauthd help [COMMAND]`, `-h` on the server and on every subcommand
// (usage and flags with their defaults, on standard output, exit 0), the command list for an
// unknown command (exit 2), and `oauthd version` from the binary's build information.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// helpErr is -h or -help on a command line: run prints that command's usage and flags.
type helpErr struct{ fs *flag.FlagSet }

func (e helpErr) Error() string { return "help requested" }
func (e helpErr) Unwrap() error { return flag.ErrHelp }

// commandGroups are the commands that take a subcommand (oauthd user add, …).
var commandGroups = []string{"user", "client", "keys", "registration-token", "group", "resource"}

// isHelpArg reports whether a is a request for help.
func isHelpArg(a string) bool {
	return a == "-h" || a == "-help" || a == "--help" || a == "help"
}

// usageLines are the lines of the usage text about command (e.g. "user"), with their
// continuation lines.
func usageLines(command string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(usage, "\n") {
		switch {
		case strings.HasPrefix(l, "  oauthd "+command+" "):
			in = true
		case strings.HasPrefix(l, "  oauthd "), !strings.HasPrefix(l, "    "):
			in = false
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// printHelp writes the usage of the command fs parses, with its flags and defaults.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	if fs.Name() == "oauthd" {
		fmt.Fprint(w, usage, "\nServer flags (each also OAUTHD_<FLAG>):\n")
	} else {
		fmt.Fprintf(w, "usage: oauthd %s [flags]\n\n", fs.Name())
		if lines := usageLines(strings.Fields(fs.Name())[0]); lines != "" {
			fmt.Fprint(w, lines, "\n")
		}
		fmt.Fprint(w, "Flags:\n")
	}
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// groupHelp answers `oauthd GROUP -h` and `oauthd help GROUP`: the group's subcommands.
func groupHelp(w io.Writer, group string) {
	fmt.Fprintf(w, "usage:\n%s\nRun 'oauthd %s SUBCOMMAND -h' for a subcommand's flags.\n", usageLines(group), group)
}

// unknownCommand answers a command oauthd does not have: the list of commands, exit 2.
func unknownCommand(w io.Writer, name string) int {
	fmt.Fprintf(w, "oauthd: unknown command %q\n\n%s", name, usage)
	return 2
}

// versionLine is what `oauthd version` prints: the module version, the VCS revision and
// time it was built from (marked "modified" for a dirty tree) and the Go version.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "oauthd (no build information)"
	}
	parts := []string{"oauthd", bi.Main.Version}
	var rev, when, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "modified"
			}
		}
	}
	if rev == "" {
		rev = "revision unknown"
	}
	parts = append(parts, rev, when, modified, bi.GoVersion)
	return strings.Join(strings.Fields(strings.Join(parts, " ")), " ")
}

// helpOrNil maps a help request to nil after printing it; other errors pass through.
func helpOrNil(err error, stdout io.Writer) error {
	var he helpErr
	if errors.As(err, &he) {
		printHelp(stdout, he.fs)
		return nil
	}
	return err
}
