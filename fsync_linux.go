//go:build linux

package main

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back (its size). It is an
// ordinary system call, which lets the runtime hand the syncer's P to other goroutines while
// the disk works. (It was a raw one, to keep the P: but a garbage collection must stop every
// P, and one inside a raw call cannot stop until the call returns, so each stop-the-world
// phase waited for the flush in flight and every request of the process, reads included,
// stood still meanwhile: 50-200 ms when the disk stalled. With the load in another process,
// the raw call was not measurably faster.)
func fdatasync(f *os.File) error {
	if _, _, e := syscall.Syscall(syscall.SYS_FDATASYNC, f.Fd(), 0, 0); e != 0 {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: e}
	}
	return nil
}
