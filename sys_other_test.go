//go:build !unix

// Test shims for systems without a umask: the file mode tests are skipped there.
package main

import "testing"

// withUmask skips the test: there are no POSIX file modes to check.
func withUmask(t *testing.T, mask int) {
	t.Skip("no POSIX file modes on this system")
}
