//go:build unix

// Test shims for Unix-like systems: the process umask, for the file mode tests.
package main

import (
	"syscall"
	"testing"
)

// withUmask sets the process umask for the rest of the test (tests touching it do not run in
// parallel) and restores it afterwards.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}
