//go:build !linux

package main

import "os"

// fdatasync flushes f (fsync, where fdatasync is not at hand).
func fdatasync(f *os.File) error { return f.Sync() }
